//! Tokio (1.24, Debian's librust-tokio-dev) peer of corio's benchmarks. Every subcommand
//! does the same work as its corio counterpart and prints one line per figure,
//! `<benchmark> <system> <value> <unit>`, with the same names and units as corio's lines.
//! The system is `tokio` with the default 2 worker threads, else `tokio-<N>w` (as corio
//! prints `corio-<N>w`).
//!
//!   tokio_bench <benchmark|runtime|sync|all> [--threads N]      (N worker threads, default 2)
//!   tokio_bench echo PORT [THREADS=1]                            (TCP echo server)
//!
//! Runtime (bench/runtime/runtime_bench.cpp):
//!   spawn    : 1,000,000 empty tasks spawned, then all awaited (ns per task)
//!   pingpong : two tasks hand an int back and forth 1,000,000 times through two
//!              `Notify`s, Tokio's auto-reset event (ns per round trip)
//!   tree     : fork-join tree, every task spawns two children and awaits both, 2^20
//!              leaves = 2,097,151 tasks (ns per task)
//!   timers   : 100,000 tasks each sleep_until(now + 1 ms) concurrently (total ms, and the
//!              largest overshoot past a deadline)
//!   io       : 1,000,000 write/read pairs of 64 bytes over a pipe (ns per op), through
//!              `AsyncFd` (Tokio 1.24 has no pipe type)
//!   yield    : 1,000,000 yield_now (ns per yield)
//!   blocked_timer : a task spawns a 50 ms sleeper, lets it arm on its own worker, then
//!              blocks that worker's thread for 200 ms; how late the sleep fires (ms past
//!              its deadline: median and max of 20 such rounds)
//! Sync (bench/sync/sync_bench.cpp):
//!   lock          : tokio::sync::Mutex lock + unlock by one task, nobody else (ns)
//!   mutex32k / 1m : N tasks each lock a tokio::sync::Mutex, increment, unlock; time from
//!                   the first spawn to the last completion (ms); also the same tasks
//!                   without the mutex (an atomic increment): `tokio-spawn-only`
//!   chan_spsc/mpmc: 1,000,000 ints through a capacity-1024 tokio::sync::mpsc channel, 1
//!                   producer and 1 consumer / 4 and 4 (M msgs/s). mpsc has one receiver:
//!                   the 4 consumers share it behind a tokio::sync::Mutex
//!   chan_pingpong : two tasks pass an int back and forth 1,000,000 times through two
//!                   channels (ns per round trip). Tokio's mpsc has no capacity 0
//!                   (rendezvous), so both `chan_pingpong` and `chan_pingpong_cap1` use
//!                   capacity 1 (two separate runs)
//! Process (bench/process/process_bench.cpp):
//!   process_spawn : /bin/true spawned 2,000 times with 20 in flight, each awaited, with
//!                   tokio::process (spawns/s)
//! Echo (bench/ipc/asio_echo.cpp): one task per connection, read up to 64 KiB, write it
//! all back; listens on 127.0.0.1:PORT with THREADS worker threads.
//!
//! Every benchmark checks its result (counts, sums, values); a wrong result is reported on
//! stderr instead of the figure, and the exit status is 1.

use std::future::Future;
use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd}; // (std::os::fd needs rustc 1.66; Debian 12 has 1.63)
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Mutex, Notify};

static FAILED: AtomicBool = AtomicBool::new(false);

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

struct Out {
    system: String,
}

impl Out {
    fn report(&self, name: &str, value: f64, unit: &str) {
        self.report_as(name, &self.system, value, unit, 1);
    }
    fn report_as(&self, name: &str, system: &str, value: f64, unit: &str, decimals: usize) {
        use std::io::Write;
        println!("{name} {system} {value:.decimals$} {unit}");
        let _ = std::io::stdout().flush();
    }
}

/// True when `ok`; otherwise notes the failure on stderr (the caller prints no figure).
fn check(ok: bool, what: &str) -> bool {
    if !ok {
        eprintln!("FAILED: {what}");
        FAILED.store(true, Ordering::Relaxed);
    }
    ok
}

/// Runs `f` as a task on the runtime's workers (as corio's block_on does) and waits for it.
fn run<F>(rt: &Runtime, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(f)).expect("benchmark task panicked")
}

// ---- runtime -------------------------------------------------------------------------

async fn bench_spawn(n: usize) -> f64 {
    let mut handles = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        handles.push(tokio::spawn(async {}));
    }
    for h in handles {
        h.await.unwrap();
    }
    ms_since(t0) * 1e6 / n as f64
}

async fn bench_pingpong(rounds: i64) -> Option<f64> {
    let ping = Arc::new(Notify::new());
    let pong = Arc::new(Notify::new());
    let t0 = Instant::now();
    let other = {
        let (ping, pong) = (ping.clone(), pong.clone());
        tokio::spawn(async move {
            let mut checksum = 0i64;
            for i in 0..rounds {
                ping.notified().await;
                checksum += i;
                pong.notify_one();
            }
            checksum
        })
    };
    for _ in 0..rounds {
        ping.notify_one();
        pong.notified().await;
    }
    let checksum = other.await.unwrap();
    let ms = ms_since(t0);
    check(checksum == rounds * (rounds - 1) / 2, "pingpong: lost a round").then(|| ms * 1e6 / rounds as f64)
}

// Boxed: an async fn cannot spawn itself without indirection (one more allocation per
// task than corio's coroutine frame).
fn tree(depth: u32) -> Pin<Box<dyn Future<Output = i64> + Send>> {
    Box::pin(async move {
        if depth == 0 {
            return 1;
        }
        let left = tokio::spawn(tree(depth - 1));
        let right = tokio::spawn(tree(depth - 1));
        left.await.unwrap() + right.await.unwrap()
    })
}

async fn bench_tree(depth: u32) -> Option<f64> {
    let t0 = Instant::now();
    let leaves = tree(depth).await;
    let ms = ms_since(t0);
    let tasks = (2i64 << depth) - 1;
    check(leaves == 1i64 << depth, "tree: wrong leaf count").then(|| ms * 1e6 / tasks as f64)
}

/// (total ms, largest overshoot in ms)
async fn bench_timers(n: usize) -> Option<(f64, f64)> {
    let max_overshoot_ns = Arc::new(AtomicI64::new(0));
    let early = Arc::new(AtomicI64::new(0));
    let mut handles = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let (max, early) = (max_overshoot_ns.clone(), early.clone());
        handles.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(1);
            tokio::time::sleep_until(deadline.into()).await;
            let now = Instant::now();
            if now < deadline {
                early.fetch_add(1, Ordering::Relaxed);
            } else {
                max.fetch_max((now - deadline).as_nanos() as i64, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let ms = ms_since(t0);
    check(early.load(Ordering::Relaxed) == 0, "timers: woke before the deadline")
        .then(|| (ms, max_overshoot_ns.load(Ordering::Relaxed) as f64 / 1e6))
}

/// One blocked_timer round: Some(lateness in ms) when the sleeper armed on this task's
/// worker thread (the only rounds that count), else None.
async fn blocked_timer_round() -> Option<f64> {
    let armed_on: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>> = Arc::new(std::sync::Mutex::new(None));
    let deadline = Instant::now() + Duration::from_millis(50);
    let sleeper = {
        let armed_on = armed_on.clone();
        tokio::spawn(async move {
            *armed_on.lock().unwrap() = Some(std::thread::current().id());
            tokio::time::sleep_until(deadline.into()).await;
            Instant::now().saturating_duration_since(deadline).as_secs_f64() * 1e3
        })
    };
    let on = loop {
        if let Some(id) = *armed_on.lock().unwrap() {
            break id;
        }
        tokio::task::yield_now().await;
    };
    let same = on == std::thread::current().id();
    if same {
        std::thread::sleep(Duration::from_millis(200)); // blocks the worker on purpose
    }
    let late = sleeper.await.unwrap();
    same.then(|| late)
}

/// blocked_timer: (median, max) lateness over `rounds` counted rounds.
async fn bench_blocked_timer(rounds: usize) -> Option<(f64, f64)> {
    let mut late = Vec::new();
    for _ in 0..rounds * 20 {
        if let Some(v) = blocked_timer_round().await {
            late.push(v);
            if late.len() == rounds {
                break;
            }
        }
    }
    if !check(late.len() == rounds, "blocked_timer: the sleeper rarely armed on the blocking worker") {
        return None;
    }
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some((late[rounds / 2], late[rounds - 1]))
}

/// One write or read on a non-blocking fd (`op` makes the system call and returns its
/// result), waiting for readiness through the I/O driver when it would block.
async fn fd_op(fd: &AsyncFd<OwnedFd>, write: bool, mut op: impl FnMut(i32) -> isize) -> io::Result<usize> {
    loop {
        let mut guard = if write { fd.writable().await? } else { fd.readable().await? };
        let res = guard.try_io(|inner| {
            let n = op(inner.get_ref().as_raw_fd());
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn bench_io(pairs: usize) -> Option<f64> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        check(false, "io: pipe2");
        return None;
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let r = AsyncFd::new(r).unwrap();
    let w = AsyncFd::new(w).unwrap();
    let mut out = [0u8; 64];
    let mut inb = [0u8; 64];
    let mut ok = true;
    let t0 = Instant::now();
    for i in 0..pairs {
        out[0] = i as u8;
        // SAFETY: the buffers outlive the calls and have the lengths given.
        let wn = fd_op(&w, true, |fd| unsafe { libc::write(fd, out.as_ptr().cast(), out.len()) }).await;
        let rn = fd_op(&r, false, |fd| unsafe { libc::read(fd, inb.as_mut_ptr().cast(), inb.len()) }).await;
        ok &= matches!(wn, Ok(64)) && matches!(rn, Ok(64)) && inb[0] == out[0];
    }
    let ms = ms_since(t0);
    check(ok, "io: short or failed op").then(|| ms * 1e6 / (2.0 * pairs as f64))
}

async fn bench_yield(n: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
    ms_since(t0) * 1e6 / n as f64
}

// ---- sync ----------------------------------------------------------------------------

const LOCK_ITERS: i64 = 10_000_000;

async fn bench_lock() -> Option<f64> {
    let m = Mutex::new(0i64);
    let t0 = Instant::now();
    for _ in 0..LOCK_ITERS {
        *m.lock().await += 1;
    }
    let ns = ms_since(t0) * 1e6 / LOCK_ITERS as f64;
    let count = *m.lock().await;
    check(count == LOCK_ITERS, "uncontended count").then_some(ns)
}

/// The state shared by the N tasks, leaked so that the tasks borrow it as corio's borrow
/// theirs by reference (no reference count traffic per task). One per benchmark run.
struct MutexState {
    counter: Mutex<i64>,
    atomic_counter: AtomicI64,
    remaining: AtomicI64, // the latch
    done: Notify,
}

async fn mutex_driver(n: i64, with_mutex: bool) -> Option<f64> {
    let s: &'static MutexState = Box::leak(Box::new(MutexState {
        counter: Mutex::new(0),
        atomic_counter: AtomicI64::new(0),
        remaining: AtomicI64::new(n),
        done: Notify::new(),
    }));
    let t0 = Instant::now();
    for _ in 0..n {
        // Detached, as corio's: the JoinHandle is dropped.
        if with_mutex {
            tokio::spawn(async move {
                *s.counter.lock().await += 1;
                if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    s.done.notify_one();
                }
            });
        } else {
            tokio::spawn(async move {
                s.atomic_counter.fetch_add(1, Ordering::Relaxed);
                if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    s.done.notify_one();
                }
            });
        }
    }
    s.done.notified().await;
    let ms = ms_since(t0);
    let count = if with_mutex { *s.counter.lock().await } else { s.atomic_counter.load(Ordering::Relaxed) };
    check(count == n, "mutex counter").then_some(ms)
}

const MSGS: i64 = 1_000_000;
const CAPACITY: usize = 1024;

async fn chan_driver(producers: i64, consumers: i64) -> Option<f64> {
    let (tx, rx) = mpsc::channel::<i32>(CAPACITY);
    let per_p = MSGS / producers;
    let per_c = MSGS / consumers;
    let t0 = Instant::now();
    let mut cs = Vec::new();
    if consumers == 1 {
        let mut rx = rx;
        cs.push(tokio::spawn(async move {
            let mut sum = 0i64;
            for _ in 0..per_c {
                sum += rx.recv().await.unwrap_or(0) as i64;
            }
            sum
        }));
    } else {
        // mpsc has a single receiver: the consumers share it (Tokio's usual MPMC idiom).
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..consumers {
            let rx = rx.clone();
            cs.push(tokio::spawn(async move {
                let mut sum = 0i64;
                for _ in 0..per_c {
                    sum += rx.lock().await.recv().await.unwrap_or(0) as i64;
                }
                sum
            }));
        }
    }
    let mut ps = Vec::new();
    for p in 0..producers {
        let tx = tx.clone();
        ps.push(tokio::spawn(async move {
            for i in p * per_p..(p + 1) * per_p {
                let _ = tx.send(i as i32).await;
            }
        }));
    }
    drop(tx);
    let mut sum = 0i64;
    for h in cs {
        sum += h.await.unwrap();
    }
    for h in ps {
        h.await.unwrap();
    }
    let s = ms_since(t0) / 1e3;
    check(sum == MSGS * (MSGS - 1) / 2, "channel sum").then(|| MSGS as f64 / s / 1e6)
}

const ROUNDS: i64 = 1_000_000;

async fn pingpong_driver(capacity: usize) -> Option<f64> {
    let (to_pong, mut pong_in) = mpsc::channel::<i32>(capacity);
    let (to_ping, mut ping_in) = mpsc::channel::<i32>(capacity);
    let h = tokio::spawn(async move {
        for _ in 0..ROUNDS {
            let v = pong_in.recv().await.unwrap_or(0);
            let _ = to_ping.send(v + 1).await;
        }
    });
    let mut bad = false;
    let t0 = Instant::now();
    for i in 0..ROUNDS {
        let v = (i & 0xffffff) as i32;
        let _ = to_pong.send(v).await;
        bad |= ping_in.recv().await != Some(v + 1);
    }
    let ns = ms_since(t0) * 1e6 / ROUNDS as f64;
    h.await.unwrap();
    check(!bad, "ping-pong value").then_some(ns)
}

// ---- process -------------------------------------------------------------------------

async fn spawn_lane(count: usize) -> usize {
    let mut bad = 0;
    for _ in 0..count {
        match tokio::process::Command::new("/bin/true").spawn() {
            Ok(mut child) => bad += !matches!(child.wait().await, Ok(st) if st.success()) as usize,
            Err(_) => bad += 1,
        }
    }
    bad
}

async fn bench_process_spawn(total: usize, in_flight: usize) -> Option<f64> {
    let t0 = Instant::now();
    let lanes: Vec<_> = (0..in_flight).map(|_| tokio::spawn(spawn_lane(total / in_flight))).collect();
    let mut bad = 0;
    for l in lanes {
        bad += l.await.unwrap();
    }
    let s = t0.elapsed().as_secs_f64();
    check(bad == 0, &format!("spawn: {bad} failures")).then(|| total as f64 / s)
}

// ---- echo server ---------------------------------------------------------------------

async fn echo_session(mut s: tokio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn echo_server(port: u16, threads: usize) -> ! {
    let rt = runtime(threads);
    let res: io::Result<()> = run(&rt, async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("tokio_echo listening on 127.0.0.1:{port}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            let (s, _) = l.accept().await?;
            tokio::spawn(echo_session(s));
        }
    });
    eprintln!("tokio_echo: {}", res.err().map(|e| e.to_string()).unwrap_or_default());
    std::process::exit(1);
}

// ---- main ----------------------------------------------------------------------------

fn runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

const BENCHMARKS: &[&str] = &[
    "spawn", "pingpong", "tree", "timers", "io", "yield", "lock", "mutex32k", "mutex1m", "chan_spsc", "chan_mpmc",
    "chan_pingpong", "process_spawn", "blocked_timer",
];

fn usage() -> ! {
    eprintln!(
        "usage: tokio_bench <benchmark|runtime|sync|all> [--threads N]\n       tokio_bench echo PORT [THREADS=1]\n\
         benchmarks: {}",
        BENCHMARKS.join(" ")
    );
    std::process::exit(2);
}

/// A thread count: a positive integer, else the usage and exit 2 (0 ran as "tokio-0w").
fn positive(s: &str) -> usize {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => usage(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("echo") {
        let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(7002);
        let threads = args.get(2).map_or(1, |t| positive(t));
        echo_server(port, threads);
    }
    let mut which = String::new();
    let mut threads = 2usize;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--threads" | "--workers" if i + 1 < args.len() => {
                threads = positive(&args[i + 1]);
                i += 1;
            }
            "-h" | "--help" => usage(),
            a if which.is_empty() && !a.starts_with('-') => which = a.to_string(),
            _ => usage(),
        }
        i += 1;
    }
    if which.is_empty() {
        which = "all".into();
    }
    let group = |names: &[&str]| -> Vec<String> { names.iter().map(|s| s.to_string()).collect() };
    let selected: Vec<String> = match which.as_str() {
        "all" => group(BENCHMARKS),
        "runtime" => group(&BENCHMARKS[..6]),
        "sync" => group(&BENCHMARKS[6..12]),
        b if BENCHMARKS.contains(&b) => vec![which.clone()],
        _ => usage(),
    };
    let out = Out { system: if threads == 2 { "tokio".into() } else { format!("tokio-{threads}w") } };
    let spawn_only = format!("{}-spawn-only", out.system);
    let rt = runtime(threads);
    for b in &selected {
        match b.as_str() {
            "spawn" => out.report("spawn", run(&rt, bench_spawn(1_000_000)), "ns/task"),
            "pingpong" => {
                if let Some(v) = run(&rt, bench_pingpong(1_000_000)) {
                    out.report("pingpong", v, "ns/rtt");
                }
            }
            "tree" => {
                if let Some(v) = run(&rt, bench_tree(20)) {
                    out.report("tree", v, "ns/task");
                }
            }
            "timers" => {
                if let Some((ms, over)) = run(&rt, bench_timers(100_000)) {
                    out.report("timers", ms, "ms");
                    out.report("timers_overshoot", over, "ms");
                }
            }
            "io" => {
                if let Some(v) = run(&rt, bench_io(1_000_000)) {
                    out.report("io", v, "ns/op");
                }
            }
            "yield" => out.report("yield", run(&rt, bench_yield(1_000_000)), "ns/yield"),
            "blocked_timer" => {
                if let Some((median, max)) = run(&rt, bench_blocked_timer(20)) {
                    out.report_as("blocked_timer_late", &out.system, median, "ms", 2);
                    out.report_as("blocked_timer_late_max", &out.system, max, "ms", 2);
                }
            }
            "lock" => {
                if let Some(v) = run(&rt, bench_lock()) {
                    out.report("lock_uncontended", v, "ns");
                }
            }
            "mutex32k" | "mutex1m" => {
                let (name, n) = if b == "mutex32k" { ("mutex_32k", 32_000) } else { ("mutex_1m", 1_000_000) };
                if let Some(v) = run(&rt, mutex_driver(n, true)) {
                    out.report(name, v, "ms");
                }
                if let Some(v) = run(&rt, mutex_driver(n, false)) {
                    out.report_as(name, &spawn_only, v, "ms", 1);
                }
            }
            "chan_spsc" => {
                if let Some(v) = run(&rt, chan_driver(1, 1)) {
                    out.report("chan_spsc", v, "Mmsg/s");
                }
            }
            "chan_mpmc" => {
                if let Some(v) = run(&rt, chan_driver(4, 4)) {
                    out.report("chan_mpmc", v, "Mmsg/s");
                }
            }
            "chan_pingpong" => {
                // Tokio's mpsc has no capacity 0: both figures use capacity 1.
                if let Some(v) = run(&rt, pingpong_driver(1)) {
                    out.report("chan_pingpong", v, "ns/rtt");
                }
                if let Some(v) = run(&rt, pingpong_driver(1)) {
                    out.report("chan_pingpong_cap1", v, "ns/rtt");
                }
            }
            "process_spawn" => {
                if let Some(v) = run(&rt, bench_process_spawn(2000, 20)) {
                    out.report_as("spawn_true_20_in_flight", &out.system, v, "spawns/s", 0);
                }
            }
            _ => unreachable!(),
        }
    }
    drop(rt);
    std::process::exit(if FAILED.load(Ordering::Relaxed) { 1 } else { 0 });
}
