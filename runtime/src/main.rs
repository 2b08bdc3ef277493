fn main() -> std::process::ExitCode {
    hanzo_twin::cli::main()
}
