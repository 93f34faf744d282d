//! `confab`: parses the command line and hands over to `cli::run`.

fn main() -> anyhow::Result<()> {
    confab::cli::main()
}
