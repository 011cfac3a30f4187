//! Names as the zone model keys them: lowercased, absolute, ordered canonically (RFC 4034 §6.1).

use std::{
    borrow::Cow,
    cmp::Ordering,
    fmt,
    hash::{Hash, Hasher},
};

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
pub(super) fn is_normalized(name: &Name) -> bool {
    name.is_fqdn() && !name.iter().flatten().any(u8::is_ascii_uppercase)
}

/// A name in the form of [`normalize`] (lowercased, absolute): the key of every map and set here.
///
/// Why not `Name` itself: hickory's `Ord` and `PartialEq` for `Name` compare case-insensitively
/// and build a `Label` (a copy) of every label of both names on every comparison. With names as
/// map keys that was most of the start-up time (about 65% of the CPU of loading a store and
/// compiling every name). These names are lowercase already, so comparing the raw label bytes
/// from the rightmost label on gives the same order for much less: slices compare bytewise with a
/// shorter prefix first, which is RFC 4034 §6.1 canonical order ("the absence of a octet sorts
/// before a zero value octet"; a name sorts before its descendants, which directly follow it).
///
/// Built by [`CanonName::new`] and [`CanonName::from_name`], or from parts of another one (which
/// keep the form); the public API still takes and returns `Name`.
#[derive(Clone)]
pub(super) struct CanonName(Name);

impl CanonName {
    /// `name` (any case, absolute or not) in key form.
    pub(super) fn new(name: &Name) -> Self {
        Self(normalize(name))
    }

    /// [`CanonName::new`] that keeps `name` as it is when it is in key form already.
    pub(super) fn from_name(name: Name) -> Self {
        if is_normalized(&name) {
            Self(name)
        } else {
            Self::new(&name)
        }
    }

    pub(super) fn name(&self) -> &Name {
        &self.0
    }

    pub(super) fn into_name(self) -> Name {
        self.0
    }

    /// Number of labels, `*` included (hickory's `num_labels` leaves out a leading `*`).
    pub(super) fn label_count(&self) -> usize {
        self.0.iter().len()
    }

    /// Whether `self` is `ancestor` or below it.
    pub(super) fn is_at_or_below(&self, ancestor: &CanonName) -> bool {
        ancestor.0.zone_of_case(&self.0)
    }

    /// The rightmost `n` labels (all of them if there are fewer). Like `Name::trim_to` without
    /// its intermediate vectors.
    pub(super) fn trim_to(&self, n: usize) -> Self {
        let labels = self.0.iter();
        let skip = labels.len().saturating_sub(n);
        let mut out = Name::root();
        for label in labels.skip(skip) {
            out = out
                .append_label(label)
                .expect("a suffix of a valid name is valid");
        }
        Self(out)
    }

    /// The parent name (the root's is the root).
    pub(super) fn parent(&self) -> Self {
        self.trim_to(self.label_count().saturating_sub(1))
    }

    /// Number of rightmost labels `self` and `other` share: the labels of their closest common
    /// ancestor.
    pub(super) fn common_labels(&self, other: &CanonName) -> usize {
        self.0
            .iter()
            .rev()
            .zip(other.0.iter().rev())
            .take_while(|(a, b)| a == b)
            .count()
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

impl PartialEq for CanonName {
    fn eq(&self, other: &Self) -> bool {
        self.0.iter().eq(other.0.iter())
    }
}

impl Eq for CanonName {}

impl Ord for CanonName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for CanonName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for CanonName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Each label hashes with its length, so the label boundaries count, as in `eq`.
        for label in self.0.iter() {
            label.hash(state);
        }
    }
}

impl fmt::Debug for CanonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for CanonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Whether the leftmost label is `*`: the owner is a wildcard (RFC 4592 §2.1.1).
pub(super) fn is_wildcard(name: &Name) -> bool {
    name.iter().next() == Some(b"*".as_slice())
}

/// Whether any label is `*`. A `*` that isn't leftmost is a literal label, but it can make a
/// wildcard exist as an empty non-terminal (`a.*.example.` makes `*.example.` exist), so the
/// compiler treats both alike.
pub(super) fn has_star_label(name: &Name) -> bool {
    name.iter().any(|l| l == b"*")
}
