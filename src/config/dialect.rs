//! Which dialect a file is read in: the command line's choice, else the
//! file's name, else its first directive that only one dialect has.

use super::chrony;
use super::lines;
use super::model::{ConfigFormat, Dialect};
use super::ntp;

/// The dialect for a file named `file_name` (its last path component)
/// holding `text`, and why, for the log.
pub(super) fn choose(format: ConfigFormat, file_name: &str, text: &str) -> (Dialect, String) {
    if let ConfigFormat::Only(dialect) = format {
        return (dialect, format!("--config-format {dialect}"));
    }
    if let Some(dialect) = by_name(file_name) {
        return (dialect, format!("the file is named {file_name}"));
    }
    for numbered in lines::numbered(text, "") {
        // An over-long line is reported by the parser.
        let Ok((line, raw)) = numbered else { break };
        let Some(first) = lines::chrony_words(raw)
            .first()
            .map(|w| w.to_ascii_lowercase())
        else {
            continue;
        };
        if let Some(dialect) = only_in(&first) {
            return (
                dialect,
                format!("its first directive that only {dialect} has is '{first}', on line {line}"),
            );
        }
    }
    (
        Dialect::Ntp,
        "no directive in it is of one dialect only; both read server and pool alike".to_string(),
    )
}

/// `chrony.conf` and `chrony*.conf` are chrony's; `ntp.conf` and `*ntp.conf`
/// (NTPsec's `ntpsec-ntp.conf` too) are ntpd's.
fn by_name(name: &str) -> Option<Dialect> {
    let name = name.to_ascii_lowercase();
    if name.starts_with("chrony") && name.ends_with(".conf") {
        Some(Dialect::Chrony)
    } else if name.ends_with("ntp.conf") {
        Some(Dialect::Ntp)
    } else {
        None
    }
}

/// The dialect that alone knows directive `name`, if only one does.
fn only_in(name: &str) -> Option<Dialect> {
    let in_chrony = chrony::known_names().any(|n| n == name);
    let in_ntp = ntp::known_names().any(|n| n == name);
    match (in_chrony, in_ntp) {
        (true, false) => Some(Dialect::Chrony),
        (false, true) => Some(Dialect::Ntp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(name: &str, text: &str) -> (Dialect, String) {
        choose(ConfigFormat::Auto, name, text)
    }

    #[test]
    fn by_the_command_line_first() {
        let (d, why) = choose(ConfigFormat::Only(Dialect::Ntp), "chrony.conf", "allow\n");
        assert_eq!(d, Dialect::Ntp);
        assert_eq!(why, "--config-format ntp");
        let (d, _) = choose(
            ConfigFormat::Only(Dialect::Chrony),
            "ntp.conf",
            "restrict x\n",
        );
        assert_eq!(d, Dialect::Chrony);
    }

    #[test]
    fn by_name_then_by_directive() {
        assert_eq!(auto("chrony.conf", "restrict default\n").0, Dialect::Chrony);
        assert_eq!(auto("chrony-test.conf", "").0, Dialect::Chrony);
        assert_eq!(auto("ntp.conf", "allow\n").0, Dialect::Ntp);
        assert_eq!(auto("ntpsec-ntp.conf", "").0, Dialect::Ntp);
        let (d, why) = auto(
            "site.conf",
            "# comment\n\nserver a iburst\npool b\nConfDir /etc/chrony/conf.d\nrestrict x\n",
        );
        assert_eq!(d, Dialect::Chrony);
        assert_eq!(
            why,
            "its first directive that only chrony has is 'confdir', on line 5"
        );
        let (d, why) = auto("site.conf", "server a\nrestrict default kod\nallow\n");
        assert_eq!(d, Dialect::Ntp);
        assert!(why.contains("'restrict', on line 2"), "{why}");
        for chrony_first in [
            "allow",
            "makestep 1 3",
            "leapsectz right/UTC",
            "rtcsync",
            "keyfile k",
        ] {
            assert_eq!(auto("x", chrony_first).0, Dialect::Chrony, "{chrony_first}");
        }
        let (d, why) = auto("x", "server a\nworkers 2\nclock software\n");
        assert_eq!(d, Dialect::Ntp);
        assert!(why.starts_with("no directive"), "{why}");
    }
}
