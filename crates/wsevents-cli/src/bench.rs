//! todo
/// Options.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}
pub(crate) async fn run(_a: Args) -> crate::Result<std::process::ExitCode> { Ok(std::process::ExitCode::SUCCESS) }
