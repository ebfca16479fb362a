//! Paged `Baselines.Fetch`, written once for both ends: the collector cuts a merged baseline into
//! pages ([`page`]), the agent puts them back together ([`Assembly`]).
//!
//! A baseline is a header (workload, maturity, version, agents) and a list of items: its runs,
//! then each dimension's behaviours in order. A page repeats the header and carries the items
//! from an offset until [`PAGE_BYTES`]; its `next_page_token` is `<version>.<next offset>`. The
//! collector keeps nothing between pages: each page is cut from the baseline as stored then, and
//! a token of another version means the baseline changed between pages ([`PageError::Stale`]),
//! so the agent starts again rather than assembling two versions.

use crate::v1::{Baseline, BaselineDimension};

/// Items per page up to about this many encoded bytes: a quarter of the message cap, so a page
/// is far from any peer's decode limit.
pub const PAGE_BYTES: usize = crate::MAX_MESSAGE_BYTES / 4;

/// Pages an agent follows for one baseline before giving up (`PAGE_BYTES` each: 256 MiB).
pub const MAX_PAGES: usize = 256;

/// Protobuf overhead counted per string (tag and length prefix), rounded up.
const FIELD_OVERHEAD: usize = 8;

/// Why a page cannot be answered or assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page token {0:?} is not <version>.<offset>")]
    BadToken(String),
    #[error(
        "the baseline changed while it was fetched in pages (version {found}, token for {asked}); fetch it again"
    )]
    Stale { asked: u64, found: u64 },
    #[error("page token offset {offset} is past the baseline's {items} items")]
    PastEnd { offset: usize, items: usize },
    #[error("more than {MAX_PAGES} pages")]
    TooManyPages,
}

/// The page of `baseline` that `token` asks for (empty: the first).
pub fn page(baseline: &Baseline, token: &str) -> Result<Baseline, PageError> {
    page_of(baseline, token, PAGE_BYTES)
}

/// [`page`] with a page size of `max_bytes` (tests use small pages).
pub fn page_of(baseline: &Baseline, token: &str, max_bytes: usize) -> Result<Baseline, PageError> {
    let start = offset(baseline.version, token)?;
    let items = item_count(baseline);
    if start > items || (start == items && start > 0) {
        return Err(PageError::PastEnd {
            offset: start,
            items,
        });
    }
    let mut out = Baseline {
        dimensions: Vec::new(),
        runs: Vec::new(),
        ..header(baseline)
    };
    let mut bytes = 0;
    let mut index = 0;
    let mut taken = 0;
    let fits = |bytes: usize, taken: usize, item: &str| {
        // At least one item per page, so every page makes progress.
        taken == 0 || bytes + item.len() + FIELD_OVERHEAD <= max_bytes
    };
    for run in &baseline.runs {
        if index >= start {
            if !fits(bytes, taken, run) {
                return Ok(finish(out, start + taken, items));
            }
            bytes += run.len() + FIELD_OVERHEAD;
            taken += 1;
            out.runs.push(run.clone());
        }
        index += 1;
    }
    for dimension in &baseline.dimensions {
        let skip = start.saturating_sub(index).min(dimension.behaviours.len());
        index += dimension.behaviours.len();
        let mut part = BaselineDimension {
            name: dimension.name.clone(),
            behaviours: Vec::new(),
        };
        for behaviour in &dimension.behaviours[skip..] {
            if !fits(bytes + dimension.name.len(), taken, behaviour) {
                push_part(&mut out, part);
                return Ok(finish(out, start + taken, items));
            }
            bytes += behaviour.len() + FIELD_OVERHEAD;
            taken += 1;
            part.behaviours.push(behaviour.clone());
        }
        if !part.behaviours.is_empty() {
            bytes += dimension.name.len() + FIELD_OVERHEAD;
        }
        push_part(&mut out, part);
    }
    Ok(finish(out, start + taken, items))
}

/// Puts a paged baseline back together, page by page.
#[derive(Debug, Default)]
pub struct Assembly {
    whole: Option<Baseline>,
    pages: usize,
}

impl Assembly {
    /// Adds the next page. Returns the token of the page to ask for next, or `None` when the
    /// baseline is complete ([`Assembly::finish`]).
    pub fn add(&mut self, mut page: Baseline) -> Result<Option<String>, PageError> {
        self.pages += 1;
        if self.pages > MAX_PAGES {
            return Err(PageError::TooManyPages);
        }
        let next = std::mem::take(&mut page.next_page_token);
        match &mut self.whole {
            None => self.whole = Some(page),
            Some(whole) => {
                if whole.version != page.version {
                    return Err(PageError::Stale {
                        asked: whole.version,
                        found: page.version,
                    });
                }
                whole.runs.append(&mut page.runs);
                for dimension in page.dimensions {
                    push_part(whole, dimension);
                }
            }
        }
        Ok((!next.is_empty()).then_some(next))
    }

    /// The whole baseline (`None` before the first page).
    pub fn finish(self) -> Option<Baseline> {
        self.whole
    }
}

/// The header fields of `baseline`, without items.
fn header(baseline: &Baseline) -> Baseline {
    Baseline {
        workload_id: baseline.workload_id.clone(),
        runs: Vec::new(),
        mature: baseline.mature,
        dimensions: Vec::new(),
        version: baseline.version,
        agents: baseline.agents,
        next_page_token: String::new(),
    }
}

/// Appends a dimension's behaviours, continuing the last dimension when it has the same name.
fn push_part(baseline: &mut Baseline, mut part: BaselineDimension) {
    if part.behaviours.is_empty() {
        return;
    }
    match baseline.dimensions.last_mut() {
        Some(last) if last.name == part.name => last.behaviours.append(&mut part.behaviours),
        _ => baseline.dimensions.push(part),
    }
}

fn finish(mut page: Baseline, next: usize, items: usize) -> Baseline {
    if next < items {
        page.next_page_token = format!("{}.{next}", page.version);
    }
    page
}

fn item_count(baseline: &Baseline) -> usize {
    baseline.runs.len()
        + baseline
            .dimensions
            .iter()
            .map(|d| d.behaviours.len())
            .sum::<usize>()
}

/// The item offset `token` names, checked against the baseline's `version`.
fn offset(version: u64, token: &str) -> Result<usize, PageError> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || PageError::BadToken(token.chars().take(64).collect());
    let (asked, offset) = token.split_once('.').ok_or_else(bad)?;
    let asked: u64 = asked.parse().map_err(|_| bad())?;
    let offset: usize = offset.parse().map_err(|_| bad())?;
    if asked != version {
        return Err(PageError::Stale {
            asked,
            found: version,
        });
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(runs: usize, dims: &[(&str, usize)]) -> Baseline {
        Baseline {
            workload_id: "w".into(),
            runs: (0..runs).map(|r| format!("run-{r}")).collect(),
            mature: true,
            dimensions: dims
                .iter()
                .map(|(name, n)| BaselineDimension {
                    name: (*name).into(),
                    behaviours: (0..*n).map(|i| format!("{{\"{name}\":{i:040}}}")).collect(),
                })
                .collect(),
            version: 7,
            agents: 3,
            next_page_token: String::new(),
        }
    }

    fn fetch_all(whole: &Baseline, max_bytes: usize) -> (Baseline, usize) {
        let mut assembly = Assembly::default();
        let mut token = String::new();
        loop {
            let p = page_of(whole, &token, max_bytes).unwrap();
            assert!(
                prost::Message::encoded_len(&p) <= max_bytes + 256,
                "a page stays near its size"
            );
            match assembly.add(p).unwrap() {
                Some(next) => token = next,
                None => break,
            }
        }
        let pages = assembly.pages;
        (assembly.finish().unwrap(), pages)
    }

    #[test]
    fn pages_put_together_give_the_baseline_back() {
        let whole = baseline(
            50,
            &[("executable", 300), ("file-access", 1), ("dns-name", 700)],
        );
        for max in [600, 4096, 1 << 20] {
            let (back, pages) = fetch_all(&whole, max);
            assert_eq!(back, whole, "page size {max}");
            assert_eq!(pages > 1, max < 100_000, "page size {max}: {pages} pages");
        }
    }

    #[test]
    fn an_empty_baseline_is_one_page() {
        let whole = baseline(0, &[]);
        let (back, pages) = fetch_all(&whole, 64);
        assert_eq!((back, pages), (whole, 1));
    }

    #[test]
    fn a_token_of_another_version_or_garbage_is_refused() {
        let whole = baseline(10, &[("executable", 10)]);
        let first = page_of(&whole, "", 64).unwrap();
        let mut changed = whole.clone();
        changed.version = 8;
        assert_eq!(
            page_of(&changed, &first.next_page_token, 64),
            Err(PageError::Stale { asked: 7, found: 8 })
        );
        assert!(matches!(
            page_of(&whole, "x", 64),
            Err(PageError::BadToken(_))
        ));
        assert!(matches!(
            page_of(&whole, "7.999", 64),
            Err(PageError::PastEnd { .. })
        ));
        let mut assembly = Assembly::default();
        assembly.add(first).unwrap();
        let mut other = page_of(&changed, "8.3", 64).unwrap();
        other.version = 8;
        assert!(matches!(assembly.add(other), Err(PageError::Stale { .. })));
    }
}
