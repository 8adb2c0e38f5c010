//! `zcaas`: everything lives in the library (see `zcaas::cli::main`).

fn main() -> std::process::ExitCode {
    zcaas::cli::main()
}
