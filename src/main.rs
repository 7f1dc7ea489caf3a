//! The `ferrite` binary: everything lives in `ferrite-server`.

#![forbid(unsafe_code)]
fn main() -> std::process::ExitCode {
    ferrite_server::main_cli()
}
