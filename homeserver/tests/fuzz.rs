//! The fuzz targets of `homeserver/fuzz` run for a bounded time on the stable toolchain, as part
//! of `make test`: each target replays its seed corpus (which holds every input that once found
//! a bug), then runs inputs mutated from it with a seeded random generator until its time is up,
//! checking that nothing panics and that no input makes the parser allocate without bound.
//!
//! This is not coverage-guided: `make fuzz` runs the same targets under libFuzzer for that. It
//! runs here because building the instrumented targets takes longer than the test budget allows,
//! while this binary reuses the test build.
//!
//! `CONFAB_FUZZ_SECS` sets the time per target (default 10; the targets run in parallel);
//! `CONFAB_FUZZ_SEED` replays a run (its seed is printed). Arguments filter targets by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The counting allocator below is the only unsafe code: `GlobalAlloc` is an unsafe trait.
#![allow(unsafe_code)]

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counts the bytes each thread has allocated, so that one input's peak can be measured.
struct CountingAllocator;

thread_local! {
    // Const-initialised without a destructor, so usable from inside the allocator at any time.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The most one input may make a target allocate at once: room for a parsed value several times
/// the input's size, far below what a length taken on trust from the input would ask for.
fn allocation_limit(input_len: usize) -> isize {
    (16 << 20) + 512 * input_len as isize
}

/// Mutated inputs are kept below this size, four times the default frame limit in the targets.
const MAX_INPUT: usize = 64 * 1024;

/// Tokens the mutator inserts: JSON syntax and its edge cases, the protocols' field names and
/// identifier pieces, so that random inputs reach past the first syntax check.
const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"null",
    b"true",
    b"false",
    b"-0",
    b"1e999",
    b"-1e-999",
    b"0.5",
    b"9007199254740991",
    b"9007199254740992",
    b"-9007199254740992",
    b"9223372036854775808",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"type\"",
    b"\"id\"",
    b"\"auth\"",
    b"\"chat\"",
    b"\"subscribe\"",
    b"\"signal\"",
    b"\"typing\"",
    b"\"room_id\"",
    b"\"since\"",
    b"\"kind\"",
    b"\"ciphertext\"",
    b"\"to\"",
    b"\"payload\"",
    b"\"token\"",
    b"\"user_id\"",
    b"\"device_id\"",
    b"X-Matrix ",
    b"x-matrix\t",
    b"origin=",
    b"destination=",
    b"key=",
    b"sig=",
    b"ed25519:",
    b"ed25519:a_1",
    b"=",
    b"\"\"",
    b"[::1]",
    b"[::ffff:1.2.3.4]",
    b":8448",
    b":65536",
    b":0",
    b"@",
    b"!",
    b"$",
    b"%",
    b"\"signatures\"",
    b"\"unsigned\"",
    b"\"pdus\"",
    b"\"edus\"",
    b"\"origin\"",
    b"\"origin_server_ts\"",
    b"\"event_id\"",
    b"\"edu_type\"",
    b"\"content\"",
    b"\"order\"",
    b"\n",
    b"\t",
    b" ",
    "é".as_bytes(),
    "\u{2028}".as_bytes(),
    "😀".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
];

/// Bytes worth writing over others.
const INTERESTING: &[u8] = b"\0\x01\x7f\x80\xff\"\\{}[]:,@!. -09aAzZ";

struct Mutator {
    rng: StdRng,
}

impl Mutator {
    fn mutate(&mut self, base: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
        let mut out = base.to_vec();
        let steps = self.rng.random_range(1..=4);
        for _ in 0..steps {
            let len = out.len();
            let at = self.rng.random_range(0..=len);
            match self.rng.random_range(0..10) {
                0 if len > 0 => out[at.min(len - 1)] ^= 1 << self.rng.random_range(0..8),
                1 if len > 0 => {
                    out[at.min(len - 1)] = INTERESTING[self.rng.random_range(0..INTERESTING.len())]
                }
                2 => out.insert(at, self.rng.random()),
                3 if len > 0 => {
                    let end = (at + self.rng.random_range(1..=16)).min(len);
                    out.drain(at.min(end)..end);
                }
                4 if len > 0 => {
                    let start = self.rng.random_range(0..len);
                    let end = (start + self.rng.random_range(1..=64)).min(len);
                    let chunk = out[start..end].to_vec();
                    out.splice(at..at, chunk);
                }
                5 | 6 => {
                    let token = DICTIONARY[self.rng.random_range(0..DICTIONARY.len())];
                    out.splice(at..at, token.iter().copied());
                }
                7 if len > 0 => {
                    let token = DICTIONARY[self.rng.random_range(0..DICTIONARY.len())];
                    let end = (at + token.len()).min(len);
                    out.splice(at.min(end)..end, token.iter().copied());
                }
                8 => {
                    // Splices another input's tail after a prefix of this one.
                    let other = &pool[self.rng.random_range(0..pool.len())];
                    let from = self.rng.random_range(0..=other.len());
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
                _ => {
                    // Repeats a token many times: deep nesting, long runs, huge numbers.
                    let token = DICTIONARY[self.rng.random_range(0..DICTIONARY.len())];
                    let times = self.rng.random_range(1..=300);
                    let run: Vec<u8> = token
                        .iter()
                        .copied()
                        .cycle()
                        .take(token.len() * times)
                        .collect();
                    out.splice(at..at, run);
                }
            }
        }
        out.truncate(MAX_INPUT);
        out
    }
}

/// Why a target failed, with what reproduces it.
struct Failure {
    target: &'static str,
    input: Vec<u8>,
    what: String,
}

struct Report {
    executions: u64,
    seeds: usize,
    failure: Option<Failure>,
}

/// Runs `input` through `target`, catching a panic and measuring its peak allocation.
fn run_one(name: &'static str, target: fn(&[u8]), input: &[u8]) -> Option<Failure> {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    let peak = PEAK.with(Cell::get) - base;
    let what = match outcome {
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_owned()),
        ),
        Ok(()) if peak > allocation_limit(input.len()) => Some(format!(
            "allocated {peak} bytes at once for a {}-byte input",
            input.len()
        )),
        Ok(()) => None,
    };
    what.map(|what| Failure {
        target: name,
        input: input.to_vec(),
        what,
    })
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

fn fuzz(name: &'static str, target: fn(&[u8]), seed: u64, budget: Duration) -> Report {
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "the seed corpus of {name} is empty");
    let mut executions = 0;
    for input in &seeds {
        executions += 1;
        if let Some(failure) = run_one(name, target, input) {
            return Report {
                executions,
                seeds: seeds.len(),
                failure: Some(failure),
            };
        }
    }
    // Each target gets its own stream, so that filtering targets does not change the others.
    let stream = name
        .bytes()
        .fold(seed, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut mutator = Mutator {
        rng: StdRng::seed_from_u64(stream),
    };
    // Mutants are fed back into the pool (a bounded ring) so that mutations compound.
    let mut pool = seeds.clone();
    let recent_slots = 256;
    let deadline = Instant::now() + budget;
    let mut next_slot = 0;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &pool[mutator.rng.random_range(0..pool.len())];
            let input = mutator.mutate(base, &pool);
            executions += 1;
            if let Some(failure) = run_one(name, target, &input) {
                return Report {
                    executions,
                    seeds: seeds.len(),
                    failure: Some(failure),
                };
            }
            if pool.len() < seeds.len() + recent_slots {
                pool.push(input);
            } else {
                pool[seeds.len() + next_slot] = input;
                next_slot = (next_slot + 1) % recent_slots;
            }
        }
    }
    Report {
        executions,
        seeds: seeds.len(),
        failure: None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in targets::TARGETS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<&targets::Target> = targets::TARGETS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let secs: f64 = std::env::var("CONFAB_FUZZ_SECS")
        .ok()
        .map(|s| s.parse().expect("CONFAB_FUZZ_SECS is a number of seconds"))
        .unwrap_or(10.0);
    let seed: u64 = std::env::var("CONFAB_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("CONFAB_FUZZ_SEED is an unsigned integer"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let budget = Duration::from_secs_f64(secs);
    println!(
        "fuzz: {} targets, {secs} s each, CONFAB_FUZZ_SEED={seed}",
        chosen.len()
    );
    // The expected panics are reported below with their input; the default hook's output for
    // each would only repeat them.
    std::panic::set_hook(Box::new(|_| {}));
    let reports: Vec<(&str, Report)> = std::thread::scope(|scope| {
        let handles: Vec<_> = chosen
            .iter()
            .map(|&&(name, target)| (name, scope.spawn(move || fuzz(name, target, seed, budget))))
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| (name, h.join().expect("the driver itself does not panic")))
            .collect()
    });
    let _ = std::panic::take_hook();
    let mut failed = false;
    for (name, report) in &reports {
        println!(
            "fuzz {name}: {} executions ({} seeds) in {secs} s",
            report.executions, report.seeds
        );
        if let Some(Failure {
            target,
            input,
            what,
        }) = &report.failure
        {
            failed = true;
            println!(
                "FAILED {target}: {what}\n  input ({} bytes): {}\n  reproduce: CONFAB_FUZZ_SEED={seed} cargo test -p confab --test fuzz -- {target}",
                input.len(),
                input.escape_ascii()
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}
