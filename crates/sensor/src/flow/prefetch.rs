//! A cache prefetch hint.
//!
//! Owns: the one `unsafe` call of the flow stage. The flow table's work per
//! packet is dominated by cache misses on its entries (hundreds of
//! thousands of short flows do not fit in cache), so a worker asks for the
//! entry of a packet a few places ahead while it handles the current one.
//!
//! Must not: read or write through the pointer; it only hints the CPU.

/// Hints the CPU to bring the cache line holding `p` closer. Any address
/// is allowed: a prefetch never faults and changes no memory.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is an SSE instruction (always present on x86_64);
    // it does not dereference in the language's sense, cannot fault, and
    // has no effect on memory contents.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
