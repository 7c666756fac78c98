//! [`Buffer`]: zeroed bytes for packed weights, aligned to 2 MiB when large
//! and, on Linux, backed by transparent huge pages where the system offers
//! them on request: decoding streams every weight once per token, and with
//! 4 KiB pages a page-table walk every 64 cache lines costs bandwidth.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// Buffers from this size up are aligned to it and advised huge pages.
const HUGE: usize = 2 << 20;

/// A heap buffer of zeroed bytes.
pub(crate) struct Buffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its memory, like a `Vec<u8>`.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        let align = if len >= HUGE { HUGE } else { 64 };
        let Ok(layout) = Layout::from_size_align(len.max(1), align) else {
            // Only a length near usize::MAX gets here; the allocator would
            // refuse it too.
            handle_alloc_error(Layout::new::<u8>())
        };
        if len < HUGE {
            // SAFETY: the layout's size is not zero.
            let ptr = unsafe { alloc_zeroed(layout) };
            let Some(ptr) = NonNull::new(ptr) else {
                handle_alloc_error(layout)
            };
            return Buffer { ptr, layout };
        }
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        // The advice must come before the pages are first touched: zeroing
        // them is what faults them in, as huge pages where the system
        // agrees (advice only: where huge pages are off, nothing changes).
        #[cfg(target_os = "linux")]
        // SAFETY: the range is this buffer's own memory.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
        // SAFETY: the buffer holds `layout.size()` bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, layout.size()) };
        Buffer { ptr, layout }
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer holds `layout.size()` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        let mut copy = Buffer::zeroed(self.layout.size());
        copy.copy_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.layout.size())
    }
}
