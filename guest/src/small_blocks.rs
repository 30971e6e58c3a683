//! Size classes and free lists for small heap blocks.
//!
//! A call allocates a dozen small blocks (keys, command lists, replies) and
//! frees them before it returns. A general-purpose allocator spends a few
//! hundred wasm instructions on each of those; a free list per power-of-two
//! size spends a handful. Blocks of a class are never split, merged or
//! given back: the memory a class holds is the most the component ever had
//! in use at once in that class, at most twice what was asked for.

use core::alloc::Layout;

/// The smallest class holds 16 bytes; class `c` holds `16 << c` bytes.
const MIN_SHIFT: u32 = 4;
/// The number of classes: 16 bytes to 1 KiB.
pub const CLASSES: usize = 7;
/// The largest request served from a class.
pub const MAX_SMALL: usize = 16 << (CLASSES - 1);
/// The alignment of every class block (the wasm allocators' usual one).
const ALIGN: usize = 16;

/// The class that serves `layout`, if it is small.
pub fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(1);
    let shift = usize::BITS - (size - 1).leading_zeros();
    Some(shift.saturating_sub(MIN_SHIFT) as usize)
}

/// The layout of one block of `class`.
pub fn class_layout(class: usize) -> Layout {
    // The size is a power of two no larger than `MAX_SMALL`, the alignment
    // a power of two: always a valid layout.
    Layout::from_size_align(16 << class, ALIGN).unwrap_or(Layout::new::<u8>())
}

/// One singly linked list of free blocks per class; a free block's first
/// word holds the next block.
pub struct FreeLists {
    heads: [*mut u8; CLASSES],
}

impl FreeLists {
    /// No free blocks yet.
    pub const fn new() -> Self {
        FreeLists {
            heads: [core::ptr::null_mut(); CLASSES],
        }
    }

    /// Takes a free block of `class`, if there is one.
    pub fn pop(&mut self, class: usize) -> Option<*mut u8> {
        let head = self.heads[class];
        if head.is_null() {
            return None;
        }
        // SAFETY: `head` was pushed by `push`, which wrote the next link into
        // its first word; the block is free, so nothing else wrote since.
        self.heads[class] = unsafe { head.cast::<*mut u8>().read() };
        Some(head)
    }

    /// Gives `block` back to `class`.
    ///
    /// # Safety
    /// `block` must be a block of `class` (at least a pointer in size,
    /// pointer-aligned) that nobody uses any more.
    pub unsafe fn push(&mut self, class: usize, block: *mut u8) {
        // SAFETY: the caller hands over a free block large enough for a link.
        unsafe { block.cast::<*mut u8>().write(self.heads[class]) };
        self.heads[class] = block;
    }
}

/// A region new blocks are cut from, front to back, before any free list
/// holds one: a fresh instance's first calls then cost as little as later
/// ones, without going to the general allocator.
pub struct Bump {
    next: usize,
    end: usize,
}

impl Bump {
    /// An empty region; [`Bump::claim`] gives it memory.
    pub const fn new() -> Self {
        Bump { next: 0, end: 0 }
    }

    /// Cuts blocks from `start..start + len` from now on.
    pub fn claim(&mut self, start: *mut u8, len: usize) {
        self.next = start as usize;
        self.end = start as usize + len;
    }

    /// A block of `class`, while the region lasts.
    pub fn take(&mut self, class: usize) -> Option<*mut u8> {
        let size = class_layout(class).size();
        let start = self.next.checked_next_multiple_of(ALIGN)?;
        let end = start.checked_add(size).filter(|&end| end <= self.end)?;
        self.next = end;
        Some(start as *mut u8)
    }
}

impl Default for Bump {
    fn default() -> Self {
        Bump::new()
    }
}

impl Default for FreeLists {
    fn default() -> Self {
        FreeLists::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(size: usize, align: usize) -> Option<usize> {
        class_of(Layout::from_size_align(size, align).unwrap())
    }

    #[test]
    fn sizes_map_to_the_smallest_class_that_holds_them() {
        assert_eq!(class(0, 1), Some(0));
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 1), Some(1));
        assert_eq!(class(32, 4), Some(1));
        assert_eq!(class(33, 4), Some(2));
        assert_eq!(class(MAX_SMALL, 1), Some(CLASSES - 1));
        for size in 0..=MAX_SMALL {
            let class = class(size, 1).unwrap();
            assert!(class_layout(class).size() >= size, "size {size} in class {class}");
            if class > 0 {
                assert!(
                    class_layout(class - 1).size() < size,
                    "size {size} could use class {}",
                    class - 1
                );
            }
        }
    }

    #[test]
    fn large_or_overaligned_requests_are_not_small() {
        assert_eq!(class(MAX_SMALL + 1, 1), None);
        assert_eq!(class(64, 32), None);
        assert_eq!(class(1 << 20, 8), None);
    }

    #[test]
    fn the_region_gives_aligned_disjoint_blocks_until_it_runs_out() {
        #[repr(align(16))]
        struct Region([u8; 256]);
        let mut region = Region([0; 256]);
        let start = region.0.as_mut_ptr();
        let mut bump = Bump::new();
        assert_eq!(bump.take(0), None);
        bump.claim(start, 256);
        let blocks: Vec<(usize, usize)> = [0, 2, 1, 0, 4]
            .into_iter()
            .map_while(|class| {
                bump.take(class)
                    .map(|block| (block as usize, class_layout(class).size()))
            })
            .collect();
        assert_eq!(blocks.len(), 4, "16 + 64 + 32 + 16 fit in 256 bytes, 256 more do not");
        let mut previous_end = start as usize;
        for (block, size) in blocks {
            assert_eq!(block % ALIGN, 0);
            assert!(block >= previous_end && block + size <= start as usize + 256);
            previous_end = block + size;
        }
        assert_eq!(bump.take(0).map(|block| block as usize), Some(previous_end));
    }

    #[test]
    fn free_blocks_come_back_last_in_first_out_per_class() {
        let mut blocks = [[0u64; 4]; 3];
        let [a, b, c] = blocks.each_mut().map(|block| block.as_mut_ptr().cast::<u8>());
        let mut lists = FreeLists::new();
        assert_eq!(lists.pop(1), None);
        unsafe {
            lists.push(1, a);
            lists.push(1, b);
            lists.push(2, c);
        }
        assert_eq!(lists.pop(1), Some(b));
        assert_eq!(lists.pop(2), Some(c));
        assert_eq!(lists.pop(1), Some(a));
        assert_eq!(lists.pop(1), None);
        assert_eq!(lists.pop(2), None);
    }
}
