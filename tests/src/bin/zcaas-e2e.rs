//! `zcaas`, built inside the test package (see Cargo.toml).

fn main() -> std::process::ExitCode {
    zcaas::cli::main()
}
