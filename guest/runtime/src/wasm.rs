// wasi-libc supplies the `memcmp`/`memcpy` family that `core` calls on
// this target; none of its WASI imports are linked in.
#[link(name = "c")]
unsafe extern "C" {}

/// talc, first over a static arena, then over pages it grows. The arena is
/// part of the component's initial memory, which wasmtime's pooling
/// allocator keeps resident between instances: a host that creates an
/// instance per request then sees an ordinary call never grow memory nor
/// fault a page in (`tests/scenarios/fresh_instances.rs` counts the
/// faults). The component's stack (32 KiB), statics and arena must stay
/// within the 64 KiB the host keeps resident.
#[global_allocator]
static ALLOCATOR: talc::cell::TalcSyncCell<ArenaThenGrow, talc::wasm::WasmBinning> =
    talc::cell::TalcSyncCell::new_wasm(ArenaThenGrow);

const ARENA_SIZE: usize = 16 * 1024;
const PAGE: usize = 65536;

static mut ARENA: [core::mem::MaybeUninit<u8>; ARENA_SIZE] = [core::mem::MaybeUninit::uninit(); ARENA_SIZE];
static mut ARENA_CLAIMED: bool = false;

#[derive(Debug)]
struct ArenaThenGrow;

// SAFETY: `acquire` hands talc memory nothing else uses (the arena, once;
// then freshly grown pages) and allocates nothing itself.
unsafe impl talc::source::Source for ArenaThenGrow {
    fn acquire<B: talc::base::binning::Binning>(
        talc: &mut talc::base::Talc<Self, B>,
        layout: core::alloc::Layout,
    ) -> Result<(), ()> {
        // SAFETY: a component instance is single-threaded; the arena is
        // claimed at most once and never touched otherwise.
        unsafe {
            if !ARENA_CLAIMED {
                ARENA_CLAIMED = true;
                if talc.claim((&raw mut ARENA).cast(), ARENA_SIZE).is_some() {
                    return Ok(());
                }
            }
        }
        let needed = layout.size() + layout.align() + 4 * talc::base::CHUNK_UNIT;
        let pages = needed.div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return Err(());
        }
        // SAFETY: the grown pages are new and belong to no one yet.
        unsafe { talc.claim((previous * PAGE) as *mut u8, pages * PAGE) }
            .map(drop)
            .ok_or(())
    }
}

/// A component has no way to print; should a bug panic, the call traps and
/// the host reports it.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocator export. std provides it on this target
/// (and wit-bindgen leaves it to std there); a `no_std` component must, and
/// it only forwards to the global allocator.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use core::alloc::{GlobalAlloc, Layout};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a valid power-of-two alignment and,
    // for a reallocation, the pointer and size of an earlier allocation.
    unsafe {
        let ptr = if old_len == 0 {
            ALLOCATOR.alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            ALLOCATOR.realloc(old, Layout::from_size_align_unchecked(old_len, align), new_len)
        };
        if ptr.is_null() {
            // Out of memory (the host's limit): trap, the host reports it.
            core::arch::wasm32::unreachable()
        }
        ptr
    }
}
