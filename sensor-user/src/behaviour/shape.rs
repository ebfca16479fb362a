//! Shape learning: a path component that takes many distinct values of one shape (same length,
//! same fixed prefix and suffix, a random middle drawn from one alphabet) across the learnt
//! paths becomes a slot, and the paths through it one pattern:
//! `/w/.git/objects/3a/tmp_obj_Xb2c9Q` and its siblings become
//! `/w/.git/objects/{hex2}/tmp_obj_{alnum6}`.
//!
//! `generalize_path` folds the names whose generator it knows (mkstemp in temporary
//! directories, cargo hashes, pids...); shapes fold the ones it does not, from what a workload
//! actually did, without a list of tools. Both are needed: a generator's name is known from
//! one value, a shape only after [`MIN_VALUES`] distinct values.
//!
//! What keeps a shape from swallowing meaning:
//! - a slot is learnt per parent directory, never across directories;
//! - its middle is letters and digits only, at least 2 characters of digits or hex, or at least
//!   6 characters of a wider alphabet where at least half the values hold a letter and half a
//!   digit, or for `[A-Za-z0-9]` both cases (so words, `passwd`/`shadow`, crate names
//!   `anyhow`/`base64`, never fold; mkstemp's `tdNyUZx` does);
//! - shapes are learnt for file paths only: executables are never matched by shape, and the
//!   judge matches credential stores exactly (see `detect`).
//!
//! Shapes are rendered (and stored) as text: a slot is `{<alphabet><length>}` inside its
//! component, as in `tmp_obj_{alnum6}`. A learnt literal component that looks like a slot is
//! never produced: components holding `{` or `}` are not shaped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Distinct values of one shape under one parent before the shape is learnt.
pub const MIN_VALUES: usize = 4;

/// Characters a random middle is drawn from, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alphabet {
    /// `0-9`.
    Digits,
    /// `0-9a-f`.
    Hex,
    /// `0-9a-z`.
    Lower,
    /// `0-9A-Za-z` (mkstemp, base62).
    Alnum,
}

impl Alphabet {
    const ALL: [Alphabet; 4] = [
        Alphabet::Digits,
        Alphabet::Hex,
        Alphabet::Lower,
        Alphabet::Alnum,
    ];

    fn name(self) -> &'static str {
        match self {
            Alphabet::Digits => "digits",
            Alphabet::Hex => "hex",
            Alphabet::Lower => "lower",
            Alphabet::Alnum => "alnum",
        }
    }

    fn holds(self, b: u8) -> bool {
        match self {
            Alphabet::Digits => b.is_ascii_digit(),
            Alphabet::Hex => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            Alphabet::Lower => b.is_ascii_digit() || b.is_ascii_lowercase(),
            Alphabet::Alnum => b.is_ascii_alphanumeric(),
        }
    }

    /// The narrowest alphabet holding every byte of `middles`.
    fn of<'a>(middles: impl Iterator<Item = &'a [u8]> + Clone) -> Option<Alphabet> {
        Alphabet::ALL
            .into_iter()
            .find(|a| middles.clone().flatten().all(|&b| a.holds(b)))
    }
}

/// A component of a learnt shape: fixed `prefix`, `len` characters of `alphabet`, fixed `suffix`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    prefix: String,
    alphabet: Alphabet,
    len: usize,
    suffix: String,
}

impl Slot {
    fn matches(&self, component: &str) -> bool {
        let Some(rest) = component.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        let Some(middle) = rest.strip_suffix(self.suffix.as_str()) else {
            return false;
        };
        middle.len() == self.len && middle.bytes().all(|b| self.alphabet.holds(b))
    }

    /// The slot `values` (one shape: same length, same punctuation) share, if their differing
    /// middle looks generated rather than named.
    fn of(values: &[&str]) -> Option<Slot> {
        let first = values.first()?.as_bytes();
        let len = first.len();
        let prefix = values
            .iter()
            .fold(len, |n, v| common_prefix(first, v.as_bytes(), n));
        let suffix_max = len - prefix;
        let suffix = values
            .iter()
            .fold(suffix_max, |n, v| common_suffix(first, v.as_bytes(), n));
        let middle_len = len - prefix - suffix;
        let middles = values.iter().map(|v| &v.as_bytes()[prefix..len - suffix]);
        let alphabet = Alphabet::of(middles.clone())?;
        let generated = match alphabet {
            Alphabet::Digits | Alphabet::Hex => middle_len >= 2,
            Alphabet::Lower | Alphabet::Alnum => {
                // Random characters mix letters and digits in most values, and in base62 also
                // both cases; names do not (one `base64` among `anyhow`, `memchr`, `fastrand`
                // is still a list of words). A third of mkstemp's 6 characters hold no digit.
                let mixed = |m: &&[u8]| {
                    m.iter().any(u8::is_ascii_digit)
                        || (alphabet == Alphabet::Alnum
                            && m.iter().any(u8::is_ascii_uppercase)
                            && m.iter().any(u8::is_ascii_lowercase))
                };
                let letters = middles
                    .clone()
                    .filter(|m| m.iter().any(u8::is_ascii_alphabetic));
                middle_len >= 6
                    && 2 * letters.count() >= values.len()
                    && 2 * middles.clone().filter(mixed).count() >= values.len()
            }
        };
        generated.then(|| Slot {
            prefix: values[0][..prefix].to_owned(),
            alphabet,
            len: middle_len,
            suffix: values[0][len - suffix..].to_owned(),
        })
    }
}

fn common_prefix(a: &[u8], b: &[u8], max: usize) -> usize {
    a.iter()
        .zip(b)
        .take(max)
        .take_while(|(x, y)| x == y)
        .count()
}

fn common_suffix(a: &[u8], b: &[u8], max: usize) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take(max)
        .take_while(|(x, y)| x == y)
        .count()
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, name, len, suffix) =
            (&self.prefix, self.alphabet.name(), self.len, &self.suffix);
        write!(f, "{prefix}{{{name}{len}}}{suffix}")
    }
}

/// One component of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Literal(String),
    Slot(Slot),
}

impl Part {
    fn matches(&self, component: &str) -> bool {
        match self {
            Part::Literal(l) => l == component,
            Part::Slot(s) => s.matches(component),
        }
    }

    fn parse(text: &str) -> Part {
        let slot = || {
            let (prefix, rest) = text.split_once('{')?;
            let (inside, suffix) = rest.split_once('}')?;
            let digits = inside.find(|c: char| c.is_ascii_digit())?;
            let (name, len) = inside.split_at(digits);
            let alphabet = Alphabet::ALL.into_iter().find(|a| a.name() == name)?;
            Some(Slot {
                prefix: prefix.to_owned(),
                alphabet,
                len: len.parse().ok()?,
                suffix: suffix.to_owned(),
            })
        };
        slot().map_or_else(|| Part::Literal(text.to_owned()), Part::Slot)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Literal(l) => f.write_str(l),
            Part::Slot(s) => s.fmt(f),
        }
    }
}

/// A learnt path pattern: components separated by `/`, at least one a [`Slot`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathShape {
    parts: Vec<Part>,
}

impl PathShape {
    /// Whether the (generalised) `path` has this shape.
    pub fn matches(&self, path: &str) -> bool {
        let mut components = path.split('/');
        self.parts
            .iter()
            .all(|p| components.next().is_some_and(|c| p.matches(c)))
            && components.next().is_none()
    }
}

impl fmt::Display for PathShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            part.fmt(f)?;
        }
        Ok(())
    }
}

impl FromStr for PathShape {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(PathShape {
            parts: text.split('/').map(Part::parse).collect(),
        })
    }
}

impl serde::Serialize for PathShape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PathShape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.parse().unwrap_or_else(|never| match never {}))
    }
}

/// What groups values into one candidate shape: their length and where their punctuation is.
fn signature(value: &str) -> (usize, Vec<(usize, u8)>) {
    let punctuation = value
        .bytes()
        .enumerate()
        .filter(|(_, b)| !b.is_ascii_alphanumeric())
        .collect();
    (value.len(), punctuation)
}

/// The slots `values` (distinct components under one parent) hold: first among values that share
/// their first character (a fixed prefix such as git's `t`), then among all the rest.
fn slots_of(values: &BTreeSet<&str>) -> Vec<Slot> {
    let mut by_signature: BTreeMap<_, Vec<&str>> = BTreeMap::new();
    for v in values.iter().filter(|v| !v.contains(['{', '}'])) {
        by_signature.entry(signature(v)).or_default().push(v);
    }
    let mut out = Vec::new();
    for group in by_signature.values().filter(|g| g.len() >= MIN_VALUES) {
        let mut by_first: BTreeMap<u8, Vec<&str>> = BTreeMap::new();
        for v in group {
            by_first.entry(v.as_bytes()[0]).or_default().push(v);
        }
        let mut rest = Vec::new();
        for same_first in by_first.into_values() {
            match Slot::of(&same_first).filter(|_| same_first.len() >= MIN_VALUES) {
                Some(slot) => out.push(slot),
                None => rest.extend(same_first),
            }
        }
        if rest.len() >= MIN_VALUES {
            out.extend(Slot::of(&rest));
        }
    }
    out
}

/// The shapes of `paths` (generalised paths of one kind of access): every path through a
/// learnt slot, with its slots, once. Slots are learnt from the root down, so a random directory
/// (`{hex2}`) gathers the names below it into one parent.
pub fn learn_shapes<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<PathShape> {
    let mut parsed: Vec<Vec<Part>> = paths
        .into_iter()
        .map(|p| p.split('/').map(|c| Part::Literal(c.to_owned())).collect())
        .collect();
    let depth = parsed.iter().map(Vec::len).max().unwrap_or(0);
    for d in 1..depth {
        let key = |p: &[Part]| {
            PathShape {
                parts: p[..d].to_vec(),
            }
            .to_string()
        };
        let mut children: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for p in parsed.iter().filter(|p| p.len() > d) {
            if let Part::Literal(value) = &p[d] {
                children.entry(key(p)).or_default().insert(value);
            }
        }
        let slots: BTreeMap<String, Vec<Slot>> = children
            .iter()
            .map(|(parent, values)| (parent.clone(), slots_of(values)))
            .filter(|(_, slots)| !slots.is_empty())
            .collect();
        if slots.is_empty() {
            continue;
        }
        for p in parsed.iter_mut().filter(|p| p.len() > d) {
            let Part::Literal(value) = &p[d] else {
                continue;
            };
            let Some(parent_slots) = slots.get(&key(p)) else {
                continue;
            };
            if let Some(slot) = parent_slots.iter().find(|s| s.matches(value)) {
                p[d] = Part::Slot(slot.clone());
            }
        }
    }
    let shapes: BTreeSet<PathShape> = parsed
        .into_iter()
        .filter(|p| p.iter().any(|part| matches!(part, Part::Slot(_))))
        .map(|parts| PathShape { parts })
        .collect();
    shapes.into_iter().collect()
}

#[cfg(test)]
mod tests;
