//! Helpers shared by the benchmark examples (`#[path]`-included: cargo only
//! builds `examples/*.rs` and `examples/*/main.rs` as examples).

use std::time::Duration;

/// CPU time (user + system) the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass; no other
    // preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts)
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
