//! `confab`: parses the command line and hands over to `cli::main`.

fn main() -> std::process::ExitCode {
    match confab::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line for people (and scripts); `{:#}` includes the causes.
            eprintln!("confab: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
