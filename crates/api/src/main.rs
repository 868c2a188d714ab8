//! The `memlayer` command: see `memlayer --help`.

fn main() -> std::process::ExitCode {
    memlayer_api::cli::main()
}
