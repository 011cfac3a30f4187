//! Lexing of presentation-format text (RFC 1035 §5.1): a master file into entries, or one
//! record's data as the API takes it into tokens; and the `\X` / `\DDD` escapes.

/// One token of presentation-format text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The text as written, escapes included; a quoted string without its quotes.
    pub text: String,
    pub quoted: bool,
    /// 1-based line the token is on.
    pub line: usize,
}

/// One logical entry of a master file: a record or a directive, parentheses joined.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) line: usize,
    /// The entry's first line starts with a blank: the owner is left out (RFC 1035 §5.1: "If
    /// [the domain name] is left blank, the previously stated domain name is used").
    pub(super) owner_blank: bool,
    pub(super) tokens: Vec<Token>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A master file: comments, parentheses, several lines.
    File,
    /// One record's data as the API takes it: one line, no comments or parentheses.
    Rdata,
}

/// Splits text into entries (RFC 1035 §5.1). Errors are `(line, reason)`.
pub(super) fn lex(text: &str, mode: Mode) -> Result<Vec<Entry>, (usize, String)> {
    let mut lexer = Lexer::new(mode);
    for line in text.split_inclusive('\n') {
        lexer.push_line(line)?;
    }
    lexer.finish()
}

/// [`lex`] a line at a time, for text that arrives in pieces: every token ends at the end of
/// its line (a quoted string, a comment, an escape), so only the line count, an open
/// parenthesis and the entry it holds carry from one line to the next.
pub(super) struct Lexer {
    mode: Mode,
    /// 1-based number of the next line.
    line: usize,
    /// Line of the open '(', if one is.
    paren: Option<usize>,
    /// The entry being read (its parentheses still open, or its line not ended yet).
    cur: Option<Entry>,
    /// Entries complete.
    done: Vec<Entry>,
}

impl Lexer {
    pub(super) fn new(mode: Mode) -> Self {
        Self {
            mode,
            line: 1,
            paren: None,
            cur: None,
            done: Vec::new(),
        }
    }

    /// Lexes one line: its text and its `\n`, which only the text's last line lacks.
    pub(super) fn push_line(&mut self, text: &str) -> Result<(), (usize, String)> {
        let mode = self.mode;
        let line = self.line;
        let (paren, cur) = (&mut self.paren, &mut self.cur);
        let mut line_start = true;
        let mut line_blank = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if line_start {
                line_blank = c == ' ' || c == '\t';
                line_start = false;
            }
            match c {
                '\n' => {
                    if mode == Mode::Rdata {
                        return Err((line, "record data must be one line".into()));
                    }
                    self.line += 1;
                    if paren.is_none() {
                        self.done.extend(cur.take());
                    }
                }
                ' ' | '\t' | '\r' => {}
                ';' | '(' | ')' if mode == Mode::Rdata => {
                    return Err((line, format!("unexpected {c:?}: quote the text")));
                }
                ';' => while chars.next_if(|&c| c != '\n').is_some() {},
                '(' => {
                    if let Some(open) = *paren {
                        return Err((line, format!("nested '(' (one is open since line {open})")));
                    }
                    *paren = Some(line);
                    cur.get_or_insert_with(|| Entry {
                        line,
                        owner_blank: line_blank,
                        tokens: Vec::new(),
                    });
                }
                ')' => {
                    if paren.take().is_none() {
                        return Err((line, "')' without '('".into()));
                    }
                }
                '"' => {
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            None | Some('\n') => {
                                return Err((line, "unterminated quoted string".into()));
                            }
                            Some('"') => break,
                            Some('\\') => {
                                s.push('\\');
                                match chars.next() {
                                    None | Some('\n') => {
                                        return Err((line, "unterminated quoted string".into()));
                                    }
                                    Some(e) => s.push(e),
                                }
                            }
                            Some(ch) => s.push(ch),
                        }
                    }
                    push_token(cur, line, line_blank, s, true);
                }
                _ => {
                    let mut s = String::from(c);
                    let mut escaped = c == '\\';
                    while let Some(&n) = chars.peek() {
                        if !escaped && matches!(n, ' ' | '\t' | '\r' | '\n' | '(' | ')' | ';' | '"')
                        {
                            break;
                        }
                        if escaped && n == '\n' {
                            return Err((line, "escape at end of line".into()));
                        }
                        escaped = !escaped && n == '\\';
                        s.push(n);
                        chars.next();
                    }
                    if escaped {
                        return Err((line, "escape at end of text".into()));
                    }
                    push_token(cur, line, line_blank, s, false);
                }
            }
        }
        Ok(())
    }

    /// The number of the next line to lex.
    pub(super) fn line(&self) -> usize {
        self.line
    }

    /// The entries completed so far (each once).
    pub(super) fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.done)
    }

    /// The end of the text: the entries not taken yet, the last one included.
    pub(super) fn finish(mut self) -> Result<Vec<Entry>, (usize, String)> {
        if let Some(open) = self.paren {
            return Err((open, "'(' is never closed".into()));
        }
        self.done.extend(self.cur);
        Ok(self.done)
    }
}

fn push_token(cur: &mut Option<Entry>, line: usize, owner_blank: bool, text: String, quoted: bool) {
    cur.get_or_insert_with(|| Entry {
        line,
        owner_blank,
        tokens: Vec::new(),
    })
    .tokens
    .push(Token { text, quoted, line });
}

/// Decodes the escapes of RFC 1035 §5.1: `\DDD` (decimal) is that byte, `\X` is X.
pub(super) fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(e) = chars.next() else {
            return Err("escape at end of text".into());
        };
        if let Some(d0) = e.to_digit(10) {
            let mut value = d0;
            for _ in 0..2 {
                let d = chars
                    .next()
                    .and_then(|c| c.to_digit(10))
                    .ok_or("\\DDD takes three decimal digits")?;
                value = value * 10 + d;
            }
            let byte = u8::try_from(value).map_err(|_| format!("\\{value} is not a byte"))?;
            out.push(byte);
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
        }
    }
    Ok(out)
}
