//! What a `no_std` component needs on `wasm32-wasip2`: an allocator, the
//! canonical ABI's `cabi_realloc`, libc's memory functions and a panic
//! handler. Shared with the test components under `tests/components/`.

// wasi-libc supplies the `memcmp`/`memcpy` family that `core` calls on
// this target; none of its WASI imports are linked in.
#[link(name = "c")]
unsafe extern "C" {}

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The canonical ABI's allocator export. `std` provides it on this target;
/// a `no_std` component must, and it only forwards to the global allocator.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, handle_alloc_error, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a valid power-of-two alignment and,
    // for a reallocation, the pointer and size of an earlier allocation.
    unsafe {
        let ptr = if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old, Layout::from_size_align_unchecked(old_len, align), new_len)
        };
        if ptr.is_null() {
            handle_alloc_error(Layout::from_size_align_unchecked(new_len, align));
        }
        ptr
    }
}

/// Nothing in this crate panics on purpose; should a bug do so, the call
/// traps and the host reports it instead of the component printing.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
