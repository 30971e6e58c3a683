//! The CLI's allocator: mimalloc, called the way `std`'s own `System`
//! allocator calls `malloc`.
//!
//! The host allocates a dozen small blocks per call (keys, commands,
//! replies), and glibc's allocator was a tenth of a call's CPU time. The
//! `mimalloc` crate's `GlobalAlloc` asks for every block through
//! `mi_malloc_aligned`, which takes mimalloc's generic, over-allocating
//! path even for the 8- and 16-byte alignments `mi_malloc` guarantees
//! anyway: about 75 instructions more per allocation, about 16 times per
//! get. Here a block whose alignment `mi_malloc` already guarantees is
//! allocated with `mi_malloc`; only larger alignments go the aligned way.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The largest alignment every `mi_malloc` block of at least that size
/// has (mimalloc's `MI_MAX_ALIGN_SIZE`, like `malloc`'s on 64-bit targets).
const MALLOC_ALIGN: usize = 16;

/// mimalloc through its plain entry points where they suffice.
pub struct MiMalloc;

/// Whether `mi_malloc(size)` is aligned enough for `align`, as `std`
/// decides for `malloc`: blocks are aligned to 16 bytes, or to their size
/// class when smaller.
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to `mi_free`, which
// takes blocks from all of its entry points; the alignment rule is the one
// `malloc` (and so `mi_malloc`) guarantees.
unsafe impl GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; mimalloc accepts any size.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of mimalloc's entry points above.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block must keep the
        // layout's alignment, which the plain call guarantees by the rule.
        unsafe {
            if plain(layout.align(), new_size) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let allocator = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 15, 16, 17, 100, 1000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let block = allocator.alloc(layout);
                    assert!(
                        !block.is_null() && (block as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    block.write_bytes(0xab, size);
                    let grown = allocator.realloc(block, layout, size * 3);
                    assert!(
                        !grown.is_null() && (grown as usize).is_multiple_of(align),
                        "{size}/{align} grown"
                    );
                    assert!((0..size).all(|i| *grown.add(i) == 0xab));
                    allocator.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    let zeroed = allocator.alloc_zeroed(layout);
                    assert!((zeroed as usize).is_multiple_of(align) && (0..size).all(|i| *zeroed.add(i) == 0));
                    allocator.dealloc(zeroed, layout);
                }
            }
        }
    }
}
