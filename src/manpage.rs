//! The man pages' own text: keygate(1)'s EXIT STATUS (from
//! [`crate::exit::Code::ALL`], the table docs/codes.md prints), FILES,
//! ENVIRONMENT and SEE ALSO, and keygate.toml(5), rendered from the very
//! Markdown of docs/configuration.md and docs/backends/*.md (compiled into
//! the binary), so the page and the docs cannot say different things.
//!
//! The Markdown is read with pulldown-cmark (CommonMark with tables) and
//! written with the roff crate clap_mangen uses, which escapes the text:
//! `##` headings become `.SH`, deeper ones and the backend pages `.SS`,
//! paragraphs `.PP`, lists `.IP`, code blocks `.nf` blocks, `` `code` `` and
//! `**strong**` bold, links their text, and a table one `.TP` entry per row
//! (its first cell the tag, each other cell a line led by its header).

use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::exit::Code;

/// docs/configuration.md, then the backend pages in file-name order: the
/// configuration reference, as readme_tests.rs reads it.
pub const REFERENCE: &[(&str, &str)] = &[
    ("configuration.md", include_str!("../docs/configuration.md")),
    ("backends/exec.md", include_str!("../docs/backends/exec.md")),
    ("backends/file.md", include_str!("../docs/backends/file.md")),
    ("backends/http.md", include_str!("../docs/backends/http.md")),
    ("backends/ldap.md", include_str!("../docs/backends/ldap.md")),
    (
        "backends/redis.md",
        include_str!("../docs/backends/redis.md"),
    ),
    ("backends/sql.md", include_str!("../docs/backends/sql.md")),
    (
        "backends/sqlite.md",
        include_str!("../docs/backends/sqlite.md"),
    ),
];

/// keygate(1)'s FILES: (path, what it is).
const FILES: &[(&str, &str)] = &[
    ("/etc/keygate/keygate.toml", "The config file (--config, $KEYGATE_CONFIG); see keygate.toml(5)."),
    ("/run/keygate/keygate.sock", "The socket Wazuh connects to ([server] socket)."),
    ("/run/keygate/keygate.sock.ctl", "The control socket of reload, cache and backends (mode 0600; root and the daemon's user only)."),
    ("/run/keygate/keygate.sock.lock, keygate.sock.ctl.lock", "The locks that make one daemon per socket; left in place when it stops."),
    ("/usr/lib/systemd/system/keygate.service", "The systemd unit; systemctl reload keygate (SIGHUP) re-reads the config, SIGUSR1 reopens the log files."),
    ("/usr/lib/systemd/system/keygate-sync.service, keygate-sync.timer", "keygate sync on a timer (disabled until enabled)."),
    ("/usr/share/doc/keygate/", "README.md, docs/ (a page per task), example configs, and the Wazuh ossec.conf blocks."),
];

/// keygate(1)'s ENVIRONMENT: (variable, what it does).
const ENVIRONMENT: &[(&str, &str)] = &[
    ("KEYGATE_CONFIG", "The config file when --config is not given (default /etc/keygate/keygate.toml)."),
    ("KEYGATE_<TABLE>__<KEY>", "Overrides one key of the config, \"__\" between levels: KEYGATE_LOG__LEVEL=debug, KEYGATE_SERVER__SOCKET=/run/k.sock; a [[backend]] by index or by name: KEYGATE_BACKEND__0__TIMEOUT=3s, KEYGATE_BACKEND__INVENTORY__TIMEOUT=3s. A bad value is reported with the variable's name; see keygate.toml(5)."),
    ("CREDENTIALS_DIRECTORY", "Set by systemd for LoadCredential=: a backend's or [wazuh]'s password_credential = \"NAME\" reads the first line of $CREDENTIALS_DIRECTORY/NAME."),
    ("JOURNAL_STREAM", "Set by systemd when stderr is the journal: the daemon's log lines then carry their syslog priority (<4> for a warning) instead of a timestamp of their own."),
];

/// keygate(1)'s SEE ALSO paragraph.
const SEE_ALSO: &str = "keygate.toml(5), sysexits(3), systemctl(1), journalctl(1), and Wazuh's \
                        documentation of <auth><key_request> (ossec.conf).";

/// `text` with its `` `code` `` spans in bold.
fn spans(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// keygate(1)'s sections after clap's: EXIT STATUS, FILES, ENVIRONMENT,
/// SEE ALSO.
pub fn keygate_sections() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    roff.text(spans(
        "Every command follows one table (sysexits(3)'s numbers above 2). The exec \
         one-shot (`id`, `ip`, `serve id`) always exits 0, as Wazuh requires.",
    ));
    for code in Code::ALL {
        roff.control("TP", []);
        roff.text([
            bold(code.number().to_string()),
            roman(format!(" ({})", code.name())),
        ]);
        roff.text(spans(code.meaning()));
    }
    for (heading, items) in [("FILES", FILES), ("ENVIRONMENT", ENVIRONMENT)] {
        roff.control("SH", [heading]);
        for (term, text) in items {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*text)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    roff
}

/// keygate.toml(5): NAME, DESCRIPTION and the reference's sections, then
/// SEE ALSO.
pub fn config_page(version: &str) -> String {
    let mut roff = Roff::default();
    roff.control(
        "TH",
        ["KEYGATE.TOML", "5", "", &format!("keygate {version}")],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman("keygate.toml - the configuration of keygate(1)")]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.extend([body()]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "keygate(1); the same reference with links in /usr/share/doc/keygate/docs/configuration.md.",
    )]);
    ascii(&roff.render())
}

/// `roff` with every character beyond ASCII written as groff's `\[uXXXX]`
/// (the docs' dashes): troff reads its input as Latin-1 unless a
/// preprocessor says otherwise.
fn ascii(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    for c in roff.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// The reference rendered (what a test compares with the Markdown).
pub fn body() -> Roff {
    let mut out = Render::default();
    for (name, markdown) in REFERENCE {
        // configuration.md's `#` is the page's title; its `##` are
        // sections. A backend page's `#` is a subsection of "Backend types".
        out.shift = if name.starts_with("backends/") { 2 } else { 0 };
        for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
            out.event(event);
        }
    }
    out.roff
}

/// The renderer's state between events.
#[derive(Default)]
struct Render {
    roff: Roff,
    /// Added to a heading's level (see [`body`]).
    shift: u8,
    /// The inline text of the block being read.
    line: Vec<Inline>,
    /// Nesting of `**strong**` and `*emphasis*`.
    strong: u32,
    emphasis: u32,
    /// A code block is open.
    code: bool,
    /// List items open (a nested list's item is indented further).
    items: u32,
    /// The table being read: its header, its rows (cells of inlines).
    header: Vec<Vec<Inline>>,
    row: Vec<Vec<Inline>>,
    in_header: bool,
}

impl Render {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(Tag::Heading { .. }) => self.line.clear(),
            Event::End(TagEnd::Heading(level)) => self.heading(level),
            Event::Start(Tag::Paragraph) if self.items == 0 => self.line.clear(),
            Event::End(TagEnd::Paragraph) if self.items == 0 => self.paragraph(),
            // A paragraph inside an item is the item's text.
            Event::End(TagEnd::Paragraph) => self.line.push(roman(" ")),
            Event::Start(Tag::Item) => {
                // The outer item's text comes before a nested list.
                self.item();
                self.items += 1;
            }
            Event::End(TagEnd::Item) => {
                self.item();
                self.items -= 1;
            }
            Event::Start(Tag::CodeBlock(_)) => {
                self.code = true;
                self.roff.control("PP", []);
                self.roff.control("RS", ["4"]);
                self.roff.control("nf", []);
            }
            Event::End(TagEnd::CodeBlock) => {
                self.code = false;
                self.roff.control("fi", []);
                self.roff.control("RE", []);
            }
            Event::Start(Tag::Strong) => self.strong += 1,
            Event::End(TagEnd::Strong) => self.strong -= 1,
            Event::Start(Tag::Emphasis) => self.emphasis += 1,
            Event::End(TagEnd::Emphasis) => self.emphasis -= 1,
            Event::Start(Tag::TableHead) => self.in_header = true,
            Event::End(TagEnd::TableHead) => {
                self.in_header = false;
                self.header = std::mem::take(&mut self.row);
            }
            Event::Start(Tag::TableCell) => self.line.clear(),
            Event::End(TagEnd::TableCell) => self.row.push(std::mem::take(&mut self.line)),
            Event::End(TagEnd::TableRow) => self.table_row(),
            Event::End(TagEnd::Table) => self.header.clear(),
            Event::Text(text) if self.code => {
                for line in text.lines() {
                    self.roff.text([roman(line)]);
                }
            }
            Event::Text(text) => self.line.push(self.styled(&text)),
            Event::Code(text) => self.line.push(bold(text.to_string())),
            Event::SoftBreak => self.line.push(roman(" ")),
            Event::HardBreak => self.line.push(Inline::LineBreak),
            // Links keep their text (the events inside); HTML is not used.
            _ => {}
        }
    }

    /// The paragraph read so far.
    fn paragraph(&mut self) {
        if !self.line.is_empty() {
            self.roff.control("PP", []);
            self.roff.text(std::mem::take(&mut self.line));
        }
    }

    /// The item text read so far, as an indented bullet.
    fn item(&mut self) {
        if self
            .line
            .iter()
            .all(|i| matches!(i, Inline::Roman(t) if t.trim().is_empty()))
        {
            self.line.clear();
            return;
        }
        let indent = (2 * self.items.max(1)).to_string();
        if self.items > 1 {
            self.roff.control("RS", ["2"]);
        }
        self.roff.control("IP", ["\\(bu", indent.as_str()]);
        self.roff.text(std::mem::take(&mut self.line));
        if self.items > 1 {
            self.roff.control("RE", []);
        }
    }

    fn styled(&self, text: &str) -> Inline {
        if self.strong > 0 {
            bold(text)
        } else if self.emphasis > 0 {
            italic(text)
        } else {
            roman(text)
        }
    }

    fn heading(&mut self, level: HeadingLevel) {
        let line = std::mem::take(&mut self.line);
        // Without arguments, .SH and .SS take the next line as the
        // heading: the text is escaped as text (a heading argument with a
        // quote in it, `type = "file"`, would break the request).
        match level as u8 + self.shift {
            // The page's own title (in NAME).
            1 => return,
            2 => self.roff.control("SH", []),
            _ => self.roff.control("SS", []),
        };
        self.roff.text(line);
    }

    /// One `.TP` entry: the first cell as the tag, each other cell on its
    /// own line led by its column's header (`default: "5s"`).
    fn table_row(&mut self) {
        let mut cells = std::mem::take(&mut self.row).into_iter();
        if self.in_header {
            return;
        }
        self.roff.control("TP", []);
        self.roff.text(cells.next().unwrap_or_default());
        for (i, cell) in cells.enumerate() {
            let mut line = Vec::new();
            if let Some(header) = self.header.get(i + 1) {
                line.push(italic(plain(header)));
                line.push(roman(": "));
            }
            line.extend(cell);
            if i > 0 {
                self.roff.control("br", []);
            }
            self.roff.text(line);
        }
    }
}

/// The text of inlines, without their style.
fn plain(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Roman(t) | Inline::Bold(t) | Inline::Italic(t) => t.as_str(),
            Inline::LineBreak => " ",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The words of a text (letters, digits and `_`).
    fn words(text: &str) -> BTreeSet<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// What a reader of the page sees: the roff without its requests and
    /// escapes.
    fn unroff(roff: &str) -> String {
        roff.lines()
            .filter(|l| !l.starts_with('.') && !l.starts_with('\''))
            .map(|l| {
                l.replace("\\fB", "")
                    .replace("\\fI", "")
                    .replace("\\fR", "")
                    .replace("\\&", "")
                    .replace("\\-", "-")
                    .replace("\\*(Aq", "'")
                    .replace("\\\\", "\\")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// keygate.toml(5) says what the reference says: the same words, no
    /// more and no fewer (the table headers aside, which lead each cell),
    /// and every key of every table is a tag with its default.
    #[test]
    fn the_config_page_says_what_the_docs_say() {
        let page = unroff(&body().to_roff());
        let mut docs = String::new();
        for (name, markdown) in REFERENCE {
            let mut title = false;
            for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
                match event {
                    // configuration.md's title is the page's NAME.
                    Event::Start(Tag::Heading {
                        level: HeadingLevel::H1,
                        ..
                    }) => {
                        title = *name == "configuration.md";
                    }
                    Event::End(TagEnd::Heading(_)) => title = false,
                    Event::Text(t) | Event::Code(t) if !title => {
                        docs.push_str(&t);
                        docs.push(' ');
                    }
                    _ => docs.push(' '),
                }
            }
        }
        let (page_words, docs_words) = (words(&page), words(&docs));
        let missing: Vec<_> = docs_words.difference(&page_words).collect();
        let extra: Vec<_> = page_words.difference(&docs_words).collect();
        assert!(missing.is_empty(), "not in keygate.toml(5): {missing:?}");
        assert!(extra.is_empty(), "not in the docs: {extra:?}");
        let roff = body().to_roff();
        let mut rows = 0;
        for (_, markdown) in REFERENCE {
            for line in markdown.lines().filter(|l| l.starts_with("| `")) {
                let cells: Vec<&str> = line.split(" | ").collect();
                let key = cells[0].trim_start_matches("| ").trim_matches('`');
                let key = key.split("`, `").next().unwrap_or(key);
                let tag = format!(".TP\n\\fB{}\\fR", key.replace('-', "\\-"));
                assert!(roff.contains(&tag), "no entry for {key}");
                rows += 1;
            }
        }
        assert!(rows > 60, "{rows}");
    }

    /// The page is ASCII: the docs' dashes are groff's named glyphs.
    #[test]
    fn the_config_page_is_ascii() {
        let page = config_page("0.0.0");
        assert!(page.is_ascii());
        assert!(page.contains("\\[u2014]"), "an em dash of configuration.md");
        assert!(page.contains("\n.TH KEYGATE.TOML 5"), "{page}");
    }

    /// Every page of docs/backends/ is in the reference the page renders.
    #[test]
    fn every_backend_page_is_rendered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/backends");
        let mut pages: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| format!("backends/{}", e.unwrap().file_name().to_string_lossy()))
            .filter(|n| n.ends_with(".md"))
            .collect();
        pages.sort();
        let rendered: Vec<&str> = REFERENCE[1..].iter().map(|(n, _)| *n).collect();
        assert_eq!(pages, rendered);
    }

    /// keygate(1)'s EXIT STATUS lists every code of the table, with its
    /// meaning; FILES and ENVIRONMENT name what the issue asks for.
    #[test]
    fn keygate_1_has_the_exit_table_files_and_environment() {
        let roff = keygate_sections().to_roff();
        let text = unroff(&roff);
        for code in Code::ALL {
            assert!(
                roff.contains(&format!(".TP\n\\fB{}\\fR", code.number())),
                "{roff}"
            );
            let meaning = code.meaning().replace('`', "");
            assert!(text.contains(&meaning), "{meaning}\n{text}");
        }
        for name in [
            "KEYGATE_CONFIG",
            "KEYGATE_<TABLE>__<KEY>",
            "CREDENTIALS_DIRECTORY",
            "JOURNAL_STREAM",
            "/etc/keygate/keygate.toml",
        ] {
            assert!(text.contains(name), "{name}");
        }
        for section in ["EXIT STATUS", "FILES", "ENVIRONMENT", "SEE ALSO"] {
            assert!(
                roff.contains(&format!(".SH \"{section}\""))
                    || roff.contains(&format!(".SH {section}\n")),
                "{section}"
            );
        }
    }
}
