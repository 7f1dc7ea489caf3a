//! Load generator for `make bench` (skeleton).
fn main() {}
