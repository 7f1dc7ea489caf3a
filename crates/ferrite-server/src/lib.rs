//! # ferrite-server (skeleton)
pub fn main_cli() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
