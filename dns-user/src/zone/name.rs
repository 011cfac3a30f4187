//! Names as the zone model keys them: lowercased, absolute, ordered canonically (RFC 4034 §6.1).

use std::{borrow::Cow, fmt};

use hickory_proto::rr::Name;

/// Lowercases a name and makes it absolute: the form every key in this module is in.
///
/// Names are always taken as absolute; a name parsed without the trailing dot means the same name.
pub fn normalize(name: &Name) -> Name {
    // Most names given are in this form already (stored names, names from the store): a copy
    // costs less than lowercasing byte by byte into a new name.
    if is_normalized(name) {
        return name.clone();
    }
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

/// Whether `name` is in the form [`normalize`] gives.
fn is_normalized(name: &Name) -> bool {
    name.is_fqdn() && !name.iter().flatten().any(u8::is_ascii_uppercase)
}

/// A name in the form of [`normalize`] (lowercased, absolute) as the key of every map and set
/// here: its labels from the rightmost on, each label's bytes then a 0 byte, with the bytes 0 and
/// 1 inside a label written as 1 1 and 1 2. Two keys compare as their bytes do (one `memcmp`),
/// and that is RFC 4034 §6.1 canonical order: the labels compare from the rightmost on, each as
/// a string of octets in which "the absence of a octet sorts before a zero value octet" (a
/// label's end, 0, sorts before any byte of a longer label, which is written as 1 or more, and
/// the escapes keep the order of the bytes they stand for). A name sorts before its
/// descendants, which directly follow it, and an ancestor's key is a prefix of its
/// descendants' keys, ending at a label's end.
///
/// Why not hickory's `Name`: its `Ord` and `PartialEq` compare case-insensitively and build a
/// `Label` (a copy) of every label of both names on every comparison, and comparing its labels
/// from the right one at a time was still an eighth of the start-up's CPU with a million owners
/// to sort, insert and look up. A key is also smaller in a map's leaf (a boxed slice of some 20
/// bytes, not an 80-byte `Name`).
///
/// Built by [`CanonName::new`] and [`CanonName::from_name`], or from parts of another one (which
/// keep the form); the public API still takes and returns `Name`, built by [`CanonName::name`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct CanonName(Box<[u8]>);

/// Ends each label in a [`CanonName`].
const END: u8 = 0;
/// Starts an escaped byte in a [`CanonName`]: 1 1 is a 0 byte, 1 2 a 1 byte.
const ESC: u8 = 1;

impl CanonName {
    /// `name` (any case, absolute or not) in key form.
    pub(super) fn new(name: &Name) -> Self {
        let labels: Vec<&[u8]> = name.iter().collect();
        Self::from_labels(&labels)
    }

    /// The key of a valid name given as its labels, leftmost first, in any case.
    pub(super) fn from_labels(labels: &[&[u8]]) -> Self {
        let mut out = Vec::with_capacity(labels.iter().map(|l| l.len() + 1).sum());
        for label in labels.iter().rev() {
            for &b in *label {
                match b {
                    END | ESC => out.extend_from_slice(&[ESC, b + 1]),
                    _ => out.push(b.to_ascii_lowercase()),
                }
            }
            out.push(END);
        }
        Self(out.into_boxed_slice())
    }

    /// [`CanonName::new`], taking the name.
    pub(super) fn from_name(name: Name) -> Self {
        Self::new(&name)
    }

    /// The labels, rightmost first, as they are in the key (escapes and all).
    fn raw_labels(&self) -> impl Iterator<Item = &[u8]> {
        // Every label ends with END, and END is in no label's bytes.
        self.0.split(|b| *b == END).take(self.label_count())
    }

    /// One label of the key, its escapes undone.
    fn unescape(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        if !raw.contains(&ESC) {
            return std::borrow::Cow::Borrowed(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter();
        while let Some(&b) = bytes.next() {
            out.push(if b == ESC {
                bytes.next().map_or(0, |e| e - 1)
            } else {
                b
            });
        }
        std::borrow::Cow::Owned(out)
    }

    /// The name (lowercase, absolute).
    pub(super) fn name(&self) -> Name {
        let labels: Vec<&[u8]> = self.raw_labels().collect();
        let mut out = Name::root();
        for raw in labels.into_iter().rev() {
            out = out
                .append_label(&*Self::unescape(raw))
                .expect("a key is made from a valid name");
        }
        out
    }

    pub(super) fn into_name(self) -> Name {
        self.name()
    }

    /// Number of labels, `*` included (hickory's `num_labels` leaves out a leading `*`).
    pub(super) fn label_count(&self) -> usize {
        self.0.iter().filter(|b| **b == END).count()
    }

    /// Length of the name in uncompressed wire form (each label and its length byte, and the
    /// root's 0).
    pub(super) fn wire_len(&self) -> usize {
        let labels: usize = self.raw_labels().map(|l| Self::unescape(l).len() + 1).sum();
        labels + 1
    }

    /// Whether `self` is `ancestor` or below it.
    pub(super) fn is_at_or_below(&self, ancestor: &CanonName) -> bool {
        self.0.starts_with(&ancestor.0)
    }

    /// The rightmost `n` labels (all of them if there are fewer).
    pub(super) fn trim_to(&self, n: usize) -> Self {
        // The key up to the end of its n-th label.
        let Some(last) = n.checked_sub(1) else {
            return Self(Box::default());
        };
        let end = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == END)
            .nth(last)
            .map_or(self.0.len(), |(i, _)| i + 1);
        Self(self.0[..end].into())
    }

    /// The parent name (the root's is the root).
    pub(super) fn parent(&self) -> Self {
        self.trim_to(self.label_count().saturating_sub(1))
    }

    /// Number of rightmost labels `self` and `other` share: the labels of their closest common
    /// ancestor. Each label end in the bytes both keys start with closes a label they share.
    pub(super) fn common_labels(&self, other: &CanonName) -> usize {
        self.0
            .iter()
            .zip(other.0.iter())
            .take_while(|(a, b)| a == b)
            .filter(|(a, _)| **a == END)
            .count()
    }

    /// Whether the leftmost label is `*`: the owner is a wildcard (RFC 4592 §2.1.1).
    pub(super) fn is_wildcard(&self) -> bool {
        // The last label is `*` if the key ends with `* END`, at its start or after an END.
        match &self.0[..] {
            [b'*', END] => true,
            [.., before, b'*', END] => *before == END,
            _ => false,
        }
    }

    /// Whether any label is `*`. A `*` that isn't leftmost is a literal label, but it can make a
    /// wildcard exist as an empty non-terminal (`a.*.example.` makes `*.example.` exist), so the
    /// compiler treats both alike.
    pub(super) fn has_star_label(&self) -> bool {
        self.raw_labels().any(|l| l == b"*")
    }

    /// The key of `keys` that is the closest ancestor-or-self of `self`, if any. `at_or_before`
    /// is the last key at or before a name in canonical order, i.e. a `range(..=name)` lookup.
    ///
    /// Why this is right: every ancestor of a name sorts before it, and a name's descendants
    /// directly follow it. So if the last key `k` at or before `self` is an ancestor-or-self, it is
    /// the closest. If not, any ancestor key `a` of `self` sorts before `k`, and with `self` in
    /// `a`'s subtree so is `k`: `a` is an ancestor of both, so at or above their closest common
    /// ancestor, which is the next name to look from. Usually one lookup, with no name built.
    pub(super) fn closest_key<'a, T>(
        &self,
        at_or_before: impl Fn(&CanonName) -> Option<(&'a CanonName, T)>,
    ) -> Option<(&'a CanonName, T)> {
        let mut probe = Cow::Borrowed(self);
        loop {
            let (key, value) = at_or_before(&probe)?;
            if probe.is_at_or_below(key) {
                return Some((key, value));
            }
            let common = probe.common_labels(key);
            // `key` <= `probe` and not its ancestor-or-self: they differ below `common` labels.
            debug_assert!(common < probe.label_count(), "{key} vs {probe}");
            probe = Cow::Owned(probe.trim_to(common));
        }
    }
}

impl fmt::Debug for CanonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.name(), f)
    }
}

impl fmt::Display for CanonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.name(), f)
    }
}
