//! `relais demo`: the pinned NATS server, Relais, and a year of synthetic history loaded
//! through the same HTTP ingest path an NGO uses.
pub use crate::synth::SynthOptions;

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many clients the synthetic history has.
    #[arg(long, default_value_t = 1200)]
    pub clients: usize,
}

/// Runs the demo.
pub async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet")
}
