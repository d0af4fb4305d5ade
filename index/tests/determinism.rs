//! Builds are reproducible: the same operations give byte-identical `to_bytes`, run after run,
//! and the same as in wasm (`tests/web.rs` checks the same fingerprints).

#[path = "determinism/scenario.rs"]
mod scenario;

#[test]
fn same_operations_same_bytes_natively_and_as_in_wasm() {
    let first = scenario::all();
    let second = scenario::all();
    for ((name, a), (_, b)) in first.iter().zip(&second) {
        assert!(a == b, "{name}: two runs differ");
    }
    let got: Vec<_> = first
        .iter()
        .map(|(name, a)| (*name, scenario::fingerprint(a)))
        .collect();
    let want: Vec<_> = first
        .iter()
        .map(|(name, _)| (*name, scenario::expected(name)))
        .collect();
    assert_eq!(got, want);
}
