//! A wasi:cli component that runs until it is killed, printing a tick every `TICK_MS`
//! milliseconds (default 1000). With `SPIN=1` it burns CPU between ticks instead of sleeping,
//! so tests can check that a busy guest is interrupted and that its CPU time is counted.
//! With `GROW_MB=N` it allocates N MiB up front, so tests can check the memory limit.

use std::time::{Duration, Instant};

fn main() {
    let tick = std::env::var("TICK_MS").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1000);
    let spin = std::env::var("SPIN").is_ok_and(|v| v == "1");
    let grow_mb = std::env::var("GROW_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);

    // Touch every page so the memory is really used, not just reserved.
    let ballast: Vec<u8> = vec![1; grow_mb * 1024 * 1024];
    println!("sleeper: started (tick {tick} ms, spin {spin}, ballast {} MiB)", ballast.len() >> 20);

    let mut n: u64 = 0;
    loop {
        n += 1;
        if spin {
            let until = Instant::now() + Duration::from_millis(tick);
            let mut x: u64 = n;
            while Instant::now() < until {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        } else {
            std::thread::sleep(Duration::from_millis(tick));
        }
        println!("sleeper: tick {n}");
    }
}
