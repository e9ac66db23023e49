//! Labels in the three languages of Relais' users.

use serde::Serialize;

/// A text in Dutch, French and English: Brussels is bilingual and the people served speak
/// many languages, so everything shown to people has the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Labels {
    /// Dutch.
    pub nl: &'static str,
    /// French.
    pub fr: &'static str,
    /// English.
    pub en: &'static str,
}

impl Labels {
    /// Builds labels from the three texts, in the order NL, FR, EN.
    pub const fn new(nl: &'static str, fr: &'static str, en: &'static str) -> Self {
        Self { nl, fr, en }
    }
}
