//! The `ferrite` binary: everything lives in `ferrite-server`.
fn main() -> std::process::ExitCode {
    ferrite_server::main_cli()
}
