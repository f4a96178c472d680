//! Manual pages, generated from the code so they never drift from it: each
//! command's from its command-line definition (clap_mangen), and
//! tachyon.conf(5) from the parser's directive reference.

use roff::{bold, italic, roman, Roff};

use crate::config::reference::DIRECTIVES;
use crate::config::{ignored_ntp_directives, refused_ntp_directives};

/// A command's manual page in `section`, from its definition.
pub fn command_page(command: clap::Command, section: &str) -> String {
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(command).section(section);
    // Rendering into memory cannot fail.
    let _ = man.render(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// tachyon.conf(5): the ntp.conf dialect tachyond reads, every directive it
/// acts on, ignores or refuses, and where the chrony.conf dialect is told.
pub fn config_page() -> String {
    let mut page = Roff::new();
    page.control("TH", ["TACHYON.CONF", "5", "", "tachyon", "File Formats"]);
    page.control("SH", ["NAME"]);
    page.text([roman(
        "tachyon.conf - tachyond's configuration (ntp.conf syntax)",
    )]);
    page.control("SH", ["SYNOPSIS"]);
    page.text([bold("/etc/tachyon/ntp.conf")]);
    page.control("SH", ["DESCRIPTION"]);
    page.text([
        roman(
            "tachyond reads the ntp.conf an ntpd or NTPsec operator already has: one directive \
         per line, words separated by blanks, # starts a comment. A directive tachyon acts on \
         is described below; one that has no meaning here is accepted with a warning; one that \
         would configure what tachyon does not have is an error naming the file and the line. \
         tachyond also reads chrony.conf, chosen by the file's name or directives \
         (--config-format); see the documentation shipped with the package. Check a file \
         with ",
        ),
        bold("tachyond --check-config FILE"),
        roman("."),
    ]);
    page.control("SH", ["DIRECTIVES"]);
    for d in DIRECTIVES {
        page.control("TP", [] as [&str; 0]);
        page.text([bold(d.synopsis)]);
        page.text([roman(d.description)]);
    }
    page.control("SH", ["ACCEPTED AND IGNORED"]);
    for (name, why) in ignored_ntp_directives() {
        page.control("TP", [] as [&str; 0]);
        page.text([bold(*name)]);
        page.text([roman(*why)]);
    }
    page.control("SH", ["REFUSED"]);
    page.text([
        roman(refused_ntp_directives().join(", ")),
        roman(": tachyon has no symmetric, broadcast, manycast or reference-clock associations."),
    ]);
    page.control("SH", ["EXAMPLE"]);
    page.control("nf", [] as [&str; 0]);
    page.text([roman(
        "driftfile /var/lib/tachyon/ntp.drift\n\
         server ntp1.example.net iburst\n\
         server ntp2.example.net iburst\n\
         server ntp3.example.net iburst\n\
         server ntp4.example.net iburst\n\
         restrict default kod limited nomodify notrap nopeer noquery\n\
         restrict 127.0.0.1\n\
         restrict ::1",
    )]);
    page.control("fi", [] as [&str; 0]);
    page.control("SH", ["SEE ALSO"]);
    page.text([
        italic("tachyond"),
        roman("(8), "),
        italic("tachyonctl"),
        roman("(8)"),
    ]);
    page.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_page_has_every_directive() {
        let page = config_page();
        assert!(page.contains("\n.TH TACHYON.CONF 5"), "{page}");
        for d in DIRECTIVES {
            assert!(page.contains(d.name), "{}", d.name);
        }
        for (name, _) in ignored_ntp_directives() {
            assert!(page.contains(name), "{name}");
        }
        assert!(
            page.contains("tachyond \\-\\-check\\-config") || page.contains("check\\-config"),
            "{page}"
        );
    }
}
