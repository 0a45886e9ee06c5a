//! Deciding what gc deletes, from what the cache holds and what the user asked to keep.
//! No I/O: the rules in one place, tested on their own.
//!
//! Kept: `nix-cache-info`; the closure (by the cache's own narinfos' References) of the
//! roots, of paths pushed within `--keep-newer-than`, and of anything stored within the
//! grace period; with only `--remove`, every narinfo but the removed ones, and no file but
//! theirs goes (a file no listed narinfo names may belong to one the listing left out).
//! `--remove` wins over everything. Then: every narinfo not kept goes first, with the debuginfo
//! entries of the NARs that go and the realisations and build-trace entries that resolve to
//! the paths that go; after them, NARs, listings and logs no kept narinfo names (and not
//! within the grace period). A realisation of a path this cache does not hold stays: Nix may
//! substitute that path from another cache. Objects gc does not understand (unreadable
//! narinfos, unknown kinds) are left alone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use oranc_core::cache_key::KeyKind;
use oranc_core::StorePath;

use super::inventory::{Inventory, NarinfoFacts, Object};

#[derive(Debug)]
pub struct Policy {
    pub roots: Vec<StorePath>,
    pub keep_newer_than: Option<Duration>,
    pub remove: Vec<StorePath>,
    pub grace: Duration,
    pub now: SystemTime,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Narinfos to delete, first.
    pub narinfos: Vec<Object>,
    /// Debuginfo entries whose NAR goes: deleted with the narinfos, before it.
    pub debug_infos: Vec<Object>,
    /// Realisations and build-trace entries that resolve to a path whose narinfo goes:
    /// deleted with the narinfos.
    pub resolutions: Vec<Object>,
    /// Objects to delete once the narinfos are gone, unless a narinfo still names them.
    pub files: Vec<Object>,
    pub kept_paths: usize,
    /// Roots asked for that the cache does not have.
    pub missing_roots: Vec<StorePath>,
    /// Paths the kept closure needs (roots and their references) whose narinfo the
    /// inventory lacks: gc asks the registry for them by tag before trusting the listing.
    pub unresolved: Vec<StorePath>,
    /// Paths to remove that the cache does not have.
    pub missing_removals: Vec<StorePath>,
    /// (kept path, removed path it references): substituting the first will fail.
    pub broken_by_removal: Vec<(StorePath, StorePath)>,
    /// Objects left alone because gc cannot judge them.
    pub left_alone: usize,
}

impl Plan {
    /// Everything to delete, in the order it goes.
    pub fn deletions(&self) -> impl Iterator<Item = &Object> {
        self.narinfos
            .iter()
            .chain(&self.debug_infos)
            .chain(&self.resolutions)
            .chain(&self.files)
    }

    pub fn bytes(&self) -> u64 {
        self.deletions().map(|o| o.size).sum()
    }
}

fn within(created: Option<SystemTime>, now: SystemTime, span: Duration) -> bool {
    created.is_some_and(|at| now.duration_since(at).map_or(true, |age| age < span))
}

/// Everything a kept narinfo names: its NAR, its listing, its build log.
pub fn names_of(facts: &NarinfoFacts) -> [String; 3] {
    [
        facts.nar_key.clone(),
        format!("{}.ls", facts.path.hash_part()),
        facts
            .deriver
            .as_ref()
            .map_or_else(String::new, |d| format!("log/{d}")),
    ]
}

pub fn plan(inventory: &Inventory, policy: &Policy) -> Plan {
    let mut result = Plan::default();
    // A path may have more than one narinfo: the same key under two tag encodings (a cache
    // moved from one to the other). Every one counts: gc keeps what any of them names, and
    // deletes them all when the path goes, so that none is left to be served without its NAR.
    let mut by_path: HashMap<&StorePath, Vec<(&Object, &NarinfoFacts)>> = HashMap::new();
    for object in &inventory.objects {
        if let Some(facts) = inventory.narinfos.get(object.tag.as_str()) {
            by_path
                .entry(&facts.path)
                .or_default()
                .push((object, facts));
        }
    }
    let removed: HashSet<&StorePath> = policy.remove.iter().collect();
    result.missing_removals = policy
        .remove
        .iter()
        .filter(|p| !by_path.contains_key(p))
        .cloned()
        .collect();
    let recent = |o: &Object| within(o.created, policy.now, policy.grace);
    let keep_mode = !policy.roots.is_empty() || policy.keep_newer_than.is_some();

    let mut roots: Vec<&StorePath> = Vec::new();
    for root in &policy.roots {
        if by_path.contains_key(root) {
            roots.push(root);
        } else {
            result.missing_roots.push(root.clone());
        }
    }
    for (path, variants) in &by_path {
        let newer = |object: &Object| {
            policy
                .keep_newer_than
                .is_some_and(|span| within(object.created, policy.now, span))
        };
        if !keep_mode || variants.iter().any(|(o, _)| newer(o) || recent(o)) {
            roots.push(path);
        }
    }

    // The closure, through the cache's References; removed paths are not kept and not
    // followed.
    let mut kept: HashSet<&StorePath> = HashSet::new();
    let mut frontier: VecDeque<&StorePath> =
        roots.into_iter().filter(|p| !removed.contains(p)).collect();
    while let Some(path) = frontier.pop_front() {
        if !kept.insert(path) {
            continue;
        }
        let Some(variants) = by_path.get(path) else {
            continue;
        };
        for reference in variants.iter().flat_map(|(_, facts)| &facts.references) {
            if removed.contains(reference) {
                if reference != path {
                    result
                        .broken_by_removal
                        .push((path.clone(), reference.clone()));
                }
            } else if !by_path.contains_key(reference) {
                result.unresolved.push(reference.clone());
            } else if !kept.contains(reference) {
                frontier.push_back(reference);
            }
        }
    }
    result.kept_paths = kept.len();
    result
        .unresolved
        .extend(result.missing_roots.iter().cloned());
    result.unresolved.sort();
    result.unresolved.dedup();

    // What the narinfos of the paths in `paths` name, every narinfo of each.
    let names_of_paths = |paths: &HashSet<&StorePath>| -> HashSet<String> {
        by_path
            .iter()
            .filter(|(path, _)| paths.contains(*path))
            .flat_map(|(_, variants)| variants.iter().flat_map(|(_, facts)| names_of(facts)))
            .collect()
    };
    let named = names_of_paths(&kept);
    // A removed path's files go whatever their age, unless a kept narinfo names them.
    let removed_names = names_of_paths(&removed);
    let unreadable: HashSet<&str> = inventory
        .unreadable
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let mut doomed = Vec::new();
    let mut debug_infos = Vec::new();
    let mut resolutions = Vec::new();
    for object in &inventory.objects {
        match object.key.kind() {
            KeyKind::NarInfo => match inventory.narinfos.get(object.tag.as_str()) {
                Some(facts) if !kept.contains(&facts.path) => result.narinfos.push(object.clone()),
                Some(_) => {}
                None if unreadable.contains(object.key.as_str()) => result.left_alone += 1,
                None => {}
            },
            KeyKind::Nar | KeyKind::Listing | KeyKind::Log => {
                // With an unreadable narinfo about, any NAR might be its: judge none.
                let key = object.key.as_str();
                // A file no narinfo names is an orphan only as far as the listing shows
                // every narinfo; gc trusts that only when asked to collect (keep mode), and
                // never for one newer than --keep-newer-than or the grace period.
                let orphan_goes = keep_mode
                    && !recent(object)
                    && !policy
                        .keep_newer_than
                        .is_some_and(|span| within(object.created, policy.now, span));
                if !unreadable.is_empty() {
                    result.left_alone += 1;
                } else if !named.contains(key) && (removed_names.contains(key) || orphan_goes) {
                    doomed.push(object.clone());
                }
            }
            // An entry goes first, with the narinfos, when the NAR it names goes.
            KeyKind::DebugInfo => match inventory.debug_infos.get(object.key.as_str()) {
                None => result.left_alone += 1,
                Some(_) if !unreadable.is_empty() => result.left_alone += 1,
                Some(nar) => debug_infos.push((object, nar)),
            },
            KeyKind::CacheInfo => {}
            KeyKind::Realisation | KeyKind::BuildTrace => {
                match inventory.resolutions.get(object.key.as_str()) {
                    Some(path) => resolutions.push((object, path)),
                    None => result.left_alone += 1,
                }
            }
        }
    }
    // A debuginfo entry goes with the NAR it names, or alone (once past the grace period)
    // when that NAR is not in the cache at all.
    let doomed_keys: HashSet<&str> = doomed.iter().map(|o| o.key.as_str()).collect();
    let present: HashSet<&str> = inventory.objects.iter().map(|o| o.key.as_str()).collect();
    result.debug_infos = debug_infos
        .into_iter()
        .filter(|(object, nar)| {
            doomed_keys.contains(nar.as_str())
                || (!present.contains(nar.as_str()) && !recent(object))
        })
        .map(|(object, _)| object.clone())
        .collect();
    let gone_paths: HashSet<&StorePath> = result
        .narinfos
        .iter()
        .filter_map(|o| inventory.narinfos.get(o.tag.as_str()))
        .map(|facts| &facts.path)
        .collect();
    result.resolutions = resolutions
        .into_iter()
        .filter(|(_, path)| gone_paths.contains(path))
        .map(|(object, _)| object.clone())
        .collect();
    // Two tags on one manifest go together: never delete a manifest a kept tag shows.
    let deleted: HashSet<&str> = result
        .narinfos
        .iter()
        .chain(&result.debug_infos)
        .chain(&result.resolutions)
        .chain(&doomed)
        .map(|o| o.tag.as_str())
        .collect();
    let kept_manifests: HashSet<_> = inventory
        .objects
        .iter()
        .filter(|o| !deleted.contains(o.tag.as_str()))
        .map(|o| o.manifest)
        .collect();
    result
        .narinfos
        .retain(|o| !kept_manifests.contains(&o.manifest));
    result
        .debug_infos
        .retain(|o| !kept_manifests.contains(&o.manifest));
    result
        .resolutions
        .retain(|o| !kept_manifests.contains(&o.manifest));
    doomed.retain(|o| !kept_manifests.contains(&o.manifest));
    result.files = doomed;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use oranc_core::{CacheKey, Sha256Hash, TagEncoding};

    const HOUR: Duration = Duration::from_secs(3600);

    fn path(name: &str) -> StorePath {
        let hash = Sha256Hash::of(name.as_bytes()).to_nix32();
        StorePath::from_base_name(&format!("{}-{name}", &hash[..32])).expect("a store path")
    }

    struct Cache {
        inventory: Inventory,
        now: SystemTime,
    }

    impl Cache {
        fn new() -> Self {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            let mut cache = Self {
                inventory: Inventory::default(),
                now,
            };
            cache.object("nix-cache-info", 100 * HOUR);
            cache
        }

        fn object(&mut self, key: &str, age: Duration) {
            let key: CacheKey = key.parse().expect("a key");
            self.inventory.objects.push(Object {
                tag: TagEncoding::Custom.tag_for(key.as_str()),
                manifest: Sha256Hash::of(key.as_str().as_bytes()),
                key,
                size: 10,
                created: Some(self.now - age),
            });
        }

        /// A path pushed `age` ago: narinfo, NAR and listing.
        fn push(&mut self, name: &str, references: &[&str], age: Duration) {
            let facts = NarinfoFacts {
                path: path(name),
                references: references.iter().map(|r| path(r)).collect(),
                nar_key: format!("nar/{name}.nar.zst"),
                deriver: None,
            };
            let key = format!("{}.narinfo", facts.path.hash_part());
            self.object(&key, age);
            self.object(&facts.nar_key.clone(), age);
            self.object(&format!("{}.ls", facts.path.hash_part()), age);
            let tag = TagEncoding::Custom.tag_for(&key).as_str().to_owned();
            self.inventory.narinfos.insert(tag, facts);
        }

        fn plan(&self, policy: impl FnOnce(&mut Policy)) -> (Vec<String>, Vec<String>) {
            let mut p = Policy {
                roots: vec![],
                keep_newer_than: None,
                remove: vec![],
                grace: Duration::ZERO,
                now: self.now,
            };
            policy(&mut p);
            let plan = plan(&self.inventory, &p);
            let names = |objects: &[Object]| {
                let mut keys: Vec<String> =
                    objects.iter().map(|o| o.key.as_str().to_owned()).collect();
                keys.sort();
                keys
            };
            (names(&plan.narinfos), names(&plan.files))
        }
    }

    fn narinfo(name: &str) -> String {
        format!("{}.narinfo", path(name).hash_part())
    }

    fn closures() -> Cache {
        let mut cache = Cache::new();
        cache.push("liba", &[], 50 * HOUR);
        cache.push("appa", &["liba", "appa"], 50 * HOUR);
        cache.push("libb", &[], 50 * HOUR);
        cache.push("appb", &["libb"], 50 * HOUR);
        cache
    }

    #[test]
    fn a_path_with_narinfos_under_two_tag_encodings_keeps_both_nars_or_loses_both_narinfos() {
        let mut cache = closures();
        // appa's narinfo again, under its base32-dnssec tag, naming another NAR (found by the
        // red team: gc followed whichever it read last, and deleted the served one's NAR).
        let key = narinfo("appa");
        let tag = TagEncoding::Base32Dnssec.tag_for(&key);
        cache.inventory.objects.push(Object {
            tag: tag.clone(),
            key: key.parse().unwrap(),
            manifest: Sha256Hash::of(tag.as_str().as_bytes()),
            size: 10,
            created: Some(cache.now - 50 * HOUR),
        });
        cache.object("nar/appa-other.nar.zst", 50 * HOUR);
        cache.inventory.narinfos.insert(
            tag.as_str().to_owned(),
            NarinfoFacts {
                path: path("appa"),
                references: vec![],
                nar_key: "nar/appa-other.nar.zst".into(),
                deriver: None,
            },
        );
        let (narinfos, files) = cache.plan(|p| p.roots = vec![path("appa")]);
        assert!(
            !files.iter().any(|f| f.starts_with("nar/appa")),
            "{files:?}"
        );
        assert!(!narinfos.contains(&key));
        let planned = plan(
            &cache.inventory,
            &Policy {
                roots: vec![path("liba")],
                keep_newer_than: None,
                remove: vec![path("appa")],
                grace: Duration::ZERO,
                now: cache.now,
            },
        );
        let gone: Vec<&str> = planned.narinfos.iter().map(|o| o.tag.as_str()).collect();
        assert!(gone.contains(&tag.as_str()), "{gone:?}");
        assert_eq!(
            gone.iter()
                .filter(|t| **t == TagEncoding::Custom.tag_for(&key).as_str())
                .count(),
            1
        );
        let files: Vec<&str> = planned.files.iter().map(|o| o.key.as_str()).collect();
        assert!(
            files.contains(&"nar/appa.nar.zst") && files.contains(&"nar/appa-other.nar.zst"),
            "{files:?}"
        );
    }

    #[test]
    fn a_realisation_or_build_trace_goes_with_the_path_it_resolves_to_and_no_sooner() {
        let mut cache = closures();
        let drv = |name: &str| format!("{}.drv", path(name));
        let entries = [
            (format!("build-trace-v2/{}/out.doi", drv("appa")), "appa"),
            (format!("build-trace-v2/{}/out.doi", drv("appb")), "appb"),
            (
                format!(
                    "realisations/sha256:{}!out.doi",
                    Sha256Hash::of(b"appb").to_hex()
                ),
                "appb",
            ),
            // A path this cache never held: Nix may substitute it from another cache.
            (
                format!("build-trace-v2/{}/out.doi", drv("elsewhere")),
                "elsewhere",
            ),
        ];
        for (key, resolves_to) in &entries {
            cache.object(key, 50 * HOUR);
            cache
                .inventory
                .resolutions
                .insert(key.clone(), path(resolves_to));
        }
        // An entry gc could not read stays.
        let unread = format!("build-trace-v2/{}/dev.doi", drv("appb"));
        cache.object(&unread, 50 * HOUR);
        let planned = plan(
            &cache.inventory,
            &Policy {
                roots: vec![path("appa")],
                keep_newer_than: None,
                remove: vec![],
                grace: Duration::ZERO,
                now: cache.now,
            },
        );
        let mut gone: Vec<&str> = planned.resolutions.iter().map(|o| o.key.as_str()).collect();
        gone.sort_unstable();
        let mut expected = [entries[1].0.as_str(), entries[2].0.as_str()];
        expected.sort_unstable();
        assert_eq!(gone, expected);
        assert_eq!(planned.left_alone, 1, "the unread entry");
        // They go with the narinfos, before any NAR.
        let order: Vec<&str> = planned.deletions().map(|o| o.key.as_str()).collect();
        let last_entry = order.iter().rposition(|k| k.ends_with(".doi")).unwrap();
        let first_nar = order.iter().position(|k| k.starts_with("nar/")).unwrap();
        assert!(last_entry < first_nar, "{order:?}");
    }

    #[test]
    fn a_debuginfo_entry_goes_with_the_nar_it_names() {
        let mut cache = closures();
        for (entry, nar) in [
            (
                "debuginfo/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.debug",
                "nar/appa.nar.zst",
            ),
            (
                "debuginfo/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.debug",
                "nar/appb.nar.zst",
            ),
            (
                "debuginfo/cccccccccccccccccccccccccccccccccccccccc.debug",
                "nar/gone.nar.zst",
            ),
        ] {
            cache.object(entry, 50 * HOUR);
            cache
                .inventory
                .debug_infos
                .insert(entry.to_owned(), nar.to_owned());
        }
        let mut p = Policy {
            roots: vec![path("appa")],
            keep_newer_than: None,
            remove: vec![],
            grace: Duration::ZERO,
            now: cache.now,
        };
        let planned = plan(&cache.inventory, &p);
        let mut gone: Vec<&str> = planned.debug_infos.iter().map(|o| o.key.as_str()).collect();
        gone.sort_unstable();
        assert_eq!(
            gone,
            [
                "debuginfo/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.debug",
                "debuginfo/cccccccccccccccccccccccccccccccccccccccc.debug"
            ]
        );
        p.grace = 100 * HOUR;
        p.keep_newer_than = None;
        assert!(plan(&cache.inventory, &p).debug_infos.is_empty());
    }

    #[test]
    fn only_collecting_deletes_files_no_listed_narinfo_names() {
        let mut cache = closures();
        // The NAR of a narinfo the listing left out, as far as gc can tell.
        cache.object("nar/unlisted.nar.zst", 50 * HOUR);
        let (_, files) = cache.plan(|p| p.remove = vec![path("appb")]);
        assert!(
            !files.contains(&"nar/unlisted.nar.zst".to_owned()),
            "{files:?}"
        );
        assert!(files.contains(&"nar/appb.nar.zst".to_owned()), "{files:?}");
        let (_, files) = cache.plan(|p| p.keep_newer_than = Some(100 * HOUR));
        assert!(files.is_empty(), "newer than --keep-newer-than: {files:?}");
        let (_, files) = cache.plan(|p| p.roots = vec![path("appa")]);
        assert!(
            files.contains(&"nar/unlisted.nar.zst".to_owned()),
            "{files:?}"
        );
    }

    #[test]
    fn names_what_the_kept_closure_needs_and_the_inventory_lacks() {
        let mut cache = Cache::new();
        cache.push("app", &["lib", "app"], 50 * HOUR);
        cache.push("other", &["unkept"], 50 * HOUR);
        let policy = Policy {
            roots: vec![path("app"), path("gone")],
            keep_newer_than: None,
            remove: vec![],
            grace: Duration::ZERO,
            now: cache.now,
        };
        let planned = plan(&cache.inventory, &policy);
        let mut expected = vec![path("lib"), path("gone")];
        expected.sort();
        assert_eq!(planned.unresolved, expected);
    }

    #[test]
    fn keeps_the_closure_of_the_roots_and_deletes_the_rest() {
        let cache = closures();
        let (narinfos, files) = cache.plan(|p| p.roots = vec![path("appa")]);
        let mut expected = vec![narinfo("appb"), narinfo("libb")];
        expected.sort();
        assert_eq!(narinfos, expected);
        assert!(files.contains(&"nar/appb.nar.zst".to_owned()));
        assert!(files.contains(&"nar/libb.nar.zst".to_owned()));
        assert!(
            !files
                .iter()
                .any(|f| f.contains("liba") || f.contains("appa")),
            "{files:?}"
        );
        assert!(!files.contains(&"nix-cache-info".to_owned()));
    }

    #[test]
    fn recent_pushes_are_roots_and_the_grace_period_protects_everything() {
        let mut cache = closures();
        cache.push("newc", &["libb"], HOUR / 2);
        let (narinfos, _) = cache.plan(|p| p.keep_newer_than = Some(HOUR));
        let mut expected = vec![narinfo("appa"), narinfo("appb"), narinfo("liba")];
        expected.sort();
        assert_eq!(narinfos, expected, "libb is kept as newc's reference");

        let (narinfos, files) = cache.plan(|p| {
            p.roots = vec![path("appa")];
            p.grace = 2 * HOUR;
        });
        assert!(!narinfos.contains(&narinfo("newc")));
        assert!(!narinfos.contains(&narinfo("libb")));
        assert!(!files.iter().any(|f| f.contains("newc")));
    }

    #[test]
    fn objects_without_a_time_are_judged_by_the_roots_alone() {
        let mut cache = closures();
        for object in &mut cache.inventory.objects {
            object.created = None;
        }
        let (narinfos, _) = cache.plan(|p| {
            p.keep_newer_than = Some(1000 * HOUR);
            p.grace = 1000 * HOUR;
        });
        assert_eq!(narinfos.len(), 4, "no root, no time: all four go");
    }

    #[test]
    fn remove_wins_and_says_what_it_breaks() {
        let cache = closures();
        let (narinfos, files) = cache.plan(|p| {
            p.remove = vec![path("liba")];
            p.grace = 1000 * HOUR;
        });
        assert_eq!(narinfos, vec![narinfo("liba")]);
        assert_eq!(
            files,
            vec![
                format!("{}.ls", path("liba").hash_part()),
                "nar/liba.nar.zst".to_owned()
            ]
        );
        let p = Policy {
            roots: vec![],
            keep_newer_than: None,
            remove: vec![path("liba")],
            grace: Duration::ZERO,
            now: cache.now,
        };
        let broken = plan(&cache.inventory, &p).broken_by_removal;
        assert_eq!(broken, vec![(path("appa"), path("liba"))]);

        let absent = Policy {
            remove: vec![path("absent")],
            ..p
        };
        let plan = plan(&cache.inventory, &absent);
        assert_eq!(plan.missing_removals, vec![path("absent")]);
        assert!(plan.narinfos.is_empty() && plan.files.is_empty());
    }

    #[test]
    fn a_nar_another_kept_narinfo_names_stays() {
        let mut cache = closures();
        // Two paths with the same NAR (same contents): removing one keeps the NAR.
        cache.push("twin", &[], 50 * HOUR);
        cache
            .inventory
            .narinfos
            .get_mut(&narinfo("twin"))
            .expect("pushed")
            .nar_key = "nar/liba.nar.zst".into();
        let (_, files) = cache.plan(|p| p.remove = vec![path("twin")]);
        assert!(!files.contains(&"nar/liba.nar.zst".to_owned()), "{files:?}");
    }

    #[test]
    fn an_unreadable_narinfo_stops_gc_from_judging_nars() {
        let mut cache = closures();
        cache.object("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo", 50 * HOUR);
        cache.inventory.unreadable.push((
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo".into(),
            "garbage".into(),
        ));
        let (narinfos, files) = cache.plan(|p| p.roots = vec![path("appa")]);
        assert_eq!(narinfos.len(), 2);
        assert!(files.is_empty(), "{files:?}");
    }
}
