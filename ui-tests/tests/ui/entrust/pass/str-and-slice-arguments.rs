// `&str` and `&[T]` (`T: Clone`) arguments are copied into the request; `&'static` ones move as they are.
use trust_core::entrust;

#[entrust]
pub struct Log {
    lines: Vec<String>,
    numbers: Vec<u32>,
    tag: &'static str,
}

#[entrust]
impl Log {
    pub fn line(&mut self, text: &str) -> usize {
        self.lines.push(text.to_owned());
        self.lines.len()
    }

    pub fn lines(&mut self, texts: &[String]) -> usize {
        self.lines.extend_from_slice(texts);
        self.lines.len()
    }

    pub fn numbers<'a>(&mut self, values: &'a [u32], also: &'a str) -> u32 {
        self.numbers.extend_from_slice(values);
        self.lines.push(also.to_owned());
        self.numbers.iter().sum()
    }

    pub fn tag(&mut self, tag: &'static str) -> &'static str {
        std::mem::replace(&mut self.tag, tag)
    }
}

fn main() {
    let log = entrust(Log { lines: vec![], numbers: vec![], tag: "" });
    let local = String::from("borrowed only for the call");
    assert_eq!(log.line(&local), 1);
    assert_eq!(log.lines(&["a".to_owned(), "b".to_owned()]), 3);
    assert_eq!(log.numbers(&[1, 2, 3], "six"), 6);
    assert_eq!(log.tag("new"), "");
}
