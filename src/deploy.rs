//! Deployment files: `relais deploy nats-config` writes the NATS accounts of the organisations
//! registry (`deploy/nats/accounts.conf`) and, on request, fresh passwords for them.

use anyhow::Context as _;
use rand::Rng as _;
use relais_domain::OrgId;
use relais_eventlog::broker;
use std::path::Path;

/// A fresh password: 32 letters and digits, starting with a letter (nats-server reads an
/// environment variable's value as configuration: it must not look like a number).
pub fn generate_password() -> String {
    let mut rng = rand::rng();
    let first = (b'a' + rng.random_range(0..26u8)) as char;
    let rest: String = (&mut rng).sample_iter(rand::distr::Alphanumeric).take(31).map(char::from).collect();
    format!("{first}{rest}")
}

/// Writes the accounts configuration for `organisations` to `out`; with `passwords`, also
/// writes a new file (mode 0600, never overwritten) of `VARIABLE=password` lines, one per user,
/// for nats-server's environment and for handing each organisation its own password.
pub fn write_nats_config(
    stream: &str,
    organisations: &[OrgId],
    out: &Path,
    passwords: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, broker::render_accounts(stream, organisations))
        .with_context(|| format!("cannot write {}", out.display()))?;
    if let Some(path) = passwords {
        let mut text = String::from(
            "# Passwords of the NATS users of Relais: secret. nats-server needs all of them in its\n\
             # environment; give each organisation only its own line.\n",
        );
        for user in broker::users(organisations) {
            text.push_str(&format!("{}={}\n", broker::password_variable(&user), generate_password()));
        }
        write_new_private(path, &text)?;
    }
    Ok(())
}

fn write_new_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = crate::privacy_cli::create_private(path)
        .with_context(|| format!("cannot create {} (an existing file is never overwritten)", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_accounts_file_is_the_rendering_of_the_default_registry() {
        let orgs: Vec<OrgId> = relais_domain::reference::default_organisations().into_iter().map(|o| o.id).collect();
        let deployed = include_str!("../deploy/nats/accounts.conf");
        assert_eq!(
            deployed,
            broker::render_accounts("RELAIS", &orgs),
            "deploy/nats/accounts.conf is stale: run `relais deploy nats-config`"
        );
    }

    #[test]
    fn passwords_are_letters_and_digits_starting_with_a_letter() {
        for _ in 0..100 {
            let p = generate_password();
            assert_eq!(p.len(), 32);
            assert!(p.starts_with(|c: char| c.is_ascii_lowercase()));
            assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        assert_ne!(generate_password(), generate_password());
    }

    #[test]
    fn a_password_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("dir");
        let orgs = vec![OrgId::parse("apo").expect("valid")];
        let out = dir.path().join("accounts.conf");
        let pw = dir.path().join("nats.env");
        write_nats_config("RELAIS", &orgs, &out, Some(&pw)).expect("written");
        let text = std::fs::read_to_string(&pw).expect("passwords");
        assert!(text.contains("RELAIS_NATS_PASSWORD_ORG_APO="));
        assert!(text.contains("RELAIS_NATS_PASSWORD_GATEWAY="));
        assert!(write_nats_config("RELAIS", &orgs, &out, Some(&pw)).is_err());
        assert_eq!(std::fs::read_to_string(&pw).expect("unchanged"), text);
    }
}
