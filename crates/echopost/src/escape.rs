//! Control characters in text that reaches a terminal or a log file (issue 13: "safe
//! human output").
//!
//! Record fields come from any client and failure reasons from any main server. Printed
//! raw, a C0 control (ESC starts ANSI sequences, CR and LF forge or hide lines) or a C1
//! control (U+009B is a one-character CSI on many terminals) lets that text move the
//! cursor, rewrite what the operator sees, set the window title or, on some terminals,
//! answer back on stdin. Every human-readable line that shows stored or server-provided
//! text goes through [`terminal_safe`]; JSON goes through [`json_string`] /
//! [`json_pretty`], which add the C1 controls and DEL to the C0 controls that JSON
//! already escapes; the session log through [`LineEscaper`].
//!
//! The controls are the Unicode general category Cc: U+0000–U+001F (C0), U+007F (DEL)
//! and U+0080–U+009F (C1). Escapes use Rust's spelling (`\n`, `\t`, `\r`, `\0`,
//! `\u{1b}`), so a line stays one line and the original text can be read back.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

/// Whether `c` is a control character (Unicode general category Cc: C0, DEL, C1).
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// `s` with every control character escaped (see the module documentation); borrowed
/// when there is none.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_char(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_char(out: &mut String, c: char) {
    if !is_control(c) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// `value` as one line of JSON whose strings carry no raw control character: serde_json
/// escapes C0 controls itself; DEL and C1 controls, which JSON allows raw, are written as
/// `\u007f` … `\u009f`. The decoded value is the same.
pub fn json_string<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut buf = Vec::with_capacity(256);
    let mut ser =
        serde_json::Serializer::with_formatter(&mut buf, Safe(serde_json::ser::CompactFormatter));
    value.serialize(&mut ser)?;
    // serde_json writes only UTF-8.
    Ok(String::from_utf8(buf).unwrap_or_default())
}

/// [`json_string`], indented for people.
pub fn json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        Safe(serde_json::ser::PrettyFormatter::new()),
    );
    value.serialize(&mut ser)?;
    Ok(String::from_utf8(buf).unwrap_or_default())
}

/// A serde_json formatter that escapes DEL and the C1 controls inside strings and
/// otherwise does what the formatter it wraps does.
struct Safe<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for Safe<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            // C0 controls never reach a fragment: serde_json escapes them first.
            if is_control(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    // Everything else as the wrapped formatter does it (the trait's defaults would write
    // compact JSON whatever `F` is).
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Escapes control characters in formatted log lines on their way to a writer: each
/// `write` is taken as whole lines (the `tracing` formatter writes one event per call),
/// and every control character but the newline that ends a line is escaped, so a value
/// with an embedded newline cannot forge a line of its own. Bytes that are not UTF-8
/// pass through unchanged (the formatter only writes UTF-8).
#[derive(Debug)]
pub struct LineEscaper<W>(pub W);

impl<W: io::Write> io::Write for LineEscaper<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let Ok(text) = std::str::from_utf8(buf) else {
            return self.0.write_all(buf);
        };
        let (body, end) = match text.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (text, ""),
        };
        match terminal_safe(body) {
            Cow::Borrowed(_) => self.0.write_all(buf),
            Cow::Owned(mut safe) => {
                safe.push_str(end);
                self.0.write_all(safe.as_bytes())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(terminal_safe("plain täxt ✓"), Cow::Borrowed(_)));
        assert_eq!(
            terminal_safe("a\x1b[31mred\x07\r\n\t\0\u{7f}\u{9b}2J\u{85}é"),
            "a\\u{1b}[31mred\\u{7}\\r\\n\\t\\0\\u{7f}\\u{9b}2J\\u{85}é"
        );
        // Every C0, DEL and C1 character, and nothing else up to U+00FF.
        for u in 0u32..=0xff {
            let c = char::from_u32(u).unwrap();
            let s = c.to_string();
            let escaped = terminal_safe(&s);
            let control = u < 0x20 || (0x7f..=0x9f).contains(&u);
            assert_eq!(escaped != s, control, "U+{u:04X}");
            assert!(!escaped.chars().any(is_control), "U+{u:04X}");
        }
    }

    #[test]
    fn json_escapes_c1_and_del_and_decodes_to_the_same_text() {
        let v = serde_json::json!({"reason": "x\u{9b}31m\u{7f}\u{1b}y", "n": [1, 2]});
        for s in [json_string(&v).unwrap(), json_pretty(&v).unwrap()] {
            assert!(
                !s.chars().any(|c| is_control(c) && c != '\n' && c != ' '),
                "{s:?}"
            );
            assert!(s.contains("\\u009b") && s.contains("\\u007f") && s.contains("\\u001b"));
            let back: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert_eq!(back, v);
        }
        assert!(json_pretty(&v).unwrap().contains("\n  \"n\": ["));
    }

    #[test]
    fn log_lines_keep_their_newline_and_nothing_else() {
        let mut out = LineEscaper(Vec::new());
        out.write_all(b"WARN reason=\"evil\nFAKE LINE\x1b]0;title\x07\"\n")
            .unwrap();
        out.write_all("ok \u{9b}\n".as_bytes()).unwrap();
        let s = String::from_utf8(out.0).unwrap();
        assert_eq!(
            s,
            "WARN reason=\"evil\\nFAKE LINE\\u{1b}]0;title\\u{7}\"\nok \\u{9b}\n"
        );
        assert_eq!(s.lines().count(), 2);
    }
}
