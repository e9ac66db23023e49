//! Synthetic history.
/// Options.
#[derive(Debug, Clone)]
pub struct SynthOptions;
