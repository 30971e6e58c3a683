//! What a `no_std` component needs on `wasm32-wasip2`: an allocator, the
//! canonical ABI's `cabi_realloc`, libc's memory functions and a panic
//! handler. Shared with the test components under `tests/components/`.

// wasi-libc supplies the `memcmp`/`memcpy` family that `core` calls on
// this target; none of its WASI imports are linked in.
#[link(name = "c")]
unsafe extern "C" {}

use core::alloc::{GlobalAlloc, Layout};

use crate::small_blocks::{Bump, FreeLists, class_layout, class_of};

/// The allocator: small blocks from per-size free lists, everything else
/// from talc (see [`crate::small_blocks`]). New small blocks are first cut
/// from a static region; talc works first over a static arena, then over
/// pages it grows. Both matter for hosts that create an instance per
/// request: they are part of the initial memory, which the pooling
/// allocator keeps resident between instances (the host's first 64 KiB),
/// so an ordinary call on a fresh instance never grows memory and takes no
/// page faults. Stack (32 KiB), statics, arena and region must stay below
/// those 64 KiB: `tests/scenarios/fresh_instances.rs` counts the faults.
#[global_allocator]
static ALLOCATOR: SmallBlocksOver<talc::cell::TalcSyncCell<ArenaThenGrow, talc::wasm::WasmBinning>> =
    SmallBlocksOver::new(talc::cell::TalcSyncCell::new_wasm(ArenaThenGrow));

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
        // SAFETY: single-threaded; the arena is claimed at most once and
        // never touched otherwise.
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

/// [`FreeLists`] in front of a general allocator; new small blocks come
/// from a static region first.
struct SmallBlocksOver<A> {
    lists: core::cell::UnsafeCell<FreeLists>,
    region: core::cell::UnsafeCell<Option<Bump>>,
    general: A,
}

impl<A> SmallBlocksOver<A> {
    const fn new(general: A) -> Self {
        SmallBlocksOver {
            lists: core::cell::UnsafeCell::new(FreeLists::new()),
            region: core::cell::UnsafeCell::new(None),
            general,
        }
    }

    /// A new block of `class` from the static region, while it lasts.
    ///
    /// # Safety
    /// Single-threaded (see `Sync` below).
    unsafe fn cut_from_region(&self, class: usize) -> Option<*mut u8> {
        /// The static region, part of the initial memory like the arena.
        #[repr(align(16))]
        struct Region([core::mem::MaybeUninit<u8>; REGION_SIZE]);
        static mut REGION: Region = Region([core::mem::MaybeUninit::uninit(); REGION_SIZE]);
        // SAFETY: single-threaded, and the region is handed out only here,
        // each byte at most once.
        let region = unsafe { &mut *self.region.get() };
        region
            .get_or_insert_with(|| {
                let mut bump = Bump::new();
                // SAFETY: only a pointer is taken; the bytes are handed out
                // by `bump`, each once.
                bump.claim(unsafe { (&raw mut REGION.0).cast() }, REGION_SIZE);
                bump
            })
            .take(class)
    }
}

/// Bytes of static memory that small blocks are first cut from.
const REGION_SIZE: usize = 8 * 1024;

// SAFETY: a component instance is single-threaded; nothing else reaches
// the lists.
unsafe impl<A: Sync> Sync for SmallBlocksOver<A> {}

// SAFETY: a small block comes from `general` with its class's layout and
// goes back to a list only when the caller frees it with a layout of the
// same class, so every block is either on one list or owned by one caller.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallBlocksOver<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: single-threaded (see `Sync` above).
            Some(class) => match unsafe { (*self.lists.get()).pop(class).or_else(|| self.cut_from_region(class)) } {
                Some(block) => block,
                // SAFETY: a class layout has a non-zero size.
                None => unsafe { self.general.alloc(class_layout(class)) },
            },
            // SAFETY: forwarded as is.
            None => unsafe { self.general.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            // SAFETY: `ptr` is a block of `class` (see `GlobalAlloc` above),
            // now free.
            Some(class) => unsafe { (*self.lists.get()).push(class, ptr) },
            // SAFETY: forwarded as is.
            None => unsafe { self.general.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            match (class_of(layout), class_of(new_layout)) {
                (None, None) => self.general.realloc(ptr, layout, new_size),
                (old, new) if old == new => ptr,
                _ => {
                    let new_ptr = self.alloc(new_layout);
                    if !new_ptr.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new_ptr
                }
            }
        }
    }
}

/// The canonical ABI's allocator export. `std` provides it on this target;
/// a `no_std` component must, and it only forwards to the global allocator.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{alloc, handle_alloc_error, realloc};
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
