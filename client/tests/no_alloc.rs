//! `check_gate` does not touch the heap for gates whose conditions read only
//! user fields (a counting global allocator proves it).

use flagraft_client::{CompiledRuleset, EvalOptions, User};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCS.with(|c| c.get())
}

/// Condition types whose value comes from the user (or the clock) alone.
const USER_ONLY: [&str; 6] = [
    "public",
    "user_field",
    "unit_id",
    "user_bucket",
    "environment_field",
    "current_time",
];

#[test]
fn check_gate_on_user_field_gates_does_not_allocate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases");
    let dcs = std::fs::read(dir.join("gates.dcs.json")).unwrap();
    let ids = std::fs::read(dir.join("gates.id_lists.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&dcs).unwrap();
    let rs = CompiledRuleset::from_dcs(&dcs, Some(&ids)).unwrap();
    let users: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("gates.users.json")).unwrap()).unwrap();
    let users: Vec<User> = users.iter().map(|u| User::from_json(u).unwrap()).collect();

    // Gates (enabled or not) whose every condition is of a user-only type.
    let gates: Vec<String> = doc["feature_gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| {
            g["rules"].as_array().unwrap().iter().all(|r| {
                r["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| USER_ONLY.contains(&c["type"].as_str().unwrap_or("")))
            })
        })
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(gates.len() >= 30, "only {} user-only gates", gates.len());

    let opts = EvalOptions::default().with_now_ms(1_730_000_000_000);
    // Warm-up: one-time lazy state (e.g. the static empty object).
    for u in &users {
        for g in &gates {
            std::hint::black_box(rs.check_gate(u, g, &opts));
        }
    }
    let mut per_gate = Vec::new();
    for g in &gates {
        let b = allocations();
        for u in &users {
            std::hint::black_box(rs.check_gate(u, g, &opts));
        }
        let n = allocations() - b;
        if n > 0 {
            per_gate.push(format!("{g}: {n}"));
        }
    }
    let before = allocations();
    let mut passed = 0usize;
    for u in &users {
        for g in &gates {
            let r = rs.check_gate(u, g, &opts);
            passed += r.value as usize;
            std::hint::black_box(r);
        }
    }
    let after = allocations();
    assert!(passed > 0, "some gates should pass");
    assert_eq!(
        after - before,
        0,
        "{} allocations over {} evaluations ({per_gate:?})",
        after - before,
        gates.len() * users.len()
    );
}
