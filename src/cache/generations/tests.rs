//! The generation table: which reads each write invalidates, and which stale answers a purge
//! rules out.

use super::*;

fn scope(user: &str, agent: Option<&str>) -> Scope {
    Scope {
        tenant: None,
        user: user.into(),
        agent: agent.map(Into::into),
    }
}

#[test]
fn agent_write_invalidates_that_agent_and_null_agent_only() {
    let scopes = Scopes::new(100);
    let (ua, ub, unull, other) = (
        scope("u", Some("a")),
        scope("u", Some("b")),
        scope("u", None),
        scope("v", Some("a")),
    );
    let before: Vec<_> = [&ua, &ub, &unull, &other].map(|s| scopes.current(s)).into();
    scopes.invalidate(&ua, Invalidate::Agent, WriteKind::Supersede);
    let after: Vec<_> = [&ua, &ub, &unull, &other].map(|s| scopes.current(s)).into();
    assert_ne!(before[0], after[0], "(u, a)");
    assert_eq!(before[1], after[1], "(u, b)");
    assert_ne!(before[2], after[2], "(u, null)");
    assert_eq!(before[3], after[3], "(v, a)");
}

#[test]
fn all_agents_delete_invalidates_every_read_of_the_user() {
    let scopes = Scopes::new(100);
    let reads = [
        scope("u", Some("a")),
        scope("u", Some("b")),
        scope("u", None),
    ];
    let before = reads.each_ref().map(|s| scopes.current(s));
    let other_before = scopes.current(&scope("v", None));
    scopes.invalidate(
        &scope("u", None),
        Invalidate::AllAgents,
        WriteKind::Supersede,
    );
    for (read, old) in reads.iter().zip(before) {
        assert_ne!(scopes.current(read), old, "{read:?}");
    }
    assert_eq!(scopes.current(&scope("v", None)), other_before);
}

#[test]
fn an_everything_bump_invalidates_every_scope() {
    let scopes = Scopes::new(100);
    let reads = [
        scope("u", Some("a")),
        scope("v", None),
        scope("w", Some("")),
    ];
    let before = reads.each_ref().map(|s| scopes.current(s));
    scopes.invalidate(
        &scope("x", None),
        Invalidate::Everything,
        WriteKind::Supersede,
    );
    for (read, old) in reads.iter().zip(before) {
        assert_ne!(scopes.current(read), old, "{read:?}");
    }
}

#[test]
fn a_write_under_any_api_key_invalidates_every_tenants_reads() {
    let scopes = Scopes::new(100);
    let mine = Scope {
        tenant: Some([1; 32]),
        ..scope("u", Some("a"))
    };
    let theirs = Scope {
        tenant: Some([2; 32]),
        ..scope("u", Some("a"))
    };
    let before = scopes.current(&theirs);
    scopes.invalidate(&mine, Invalidate::Agent, WriteKind::Supersede);
    assert_ne!(scopes.current(&theirs), before);
}

#[test]
fn slot_ids_are_stable_and_distinct() {
    // The same in every process: the shared tier names slots by them.
    let id = Slot::Agent("u", Some("a")).id();
    assert_eq!(
        id[..4],
        [0x61, 0xa8, 0x22, 0x2e],
        "a slot's id must never change between releases"
    );
    let ids = [
        Slot::Agent("u", Some("a")).id(),
        Slot::Agent("u", None).id(),
        Slot::Agent("u", Some("")).id(),
        Slot::Agent("ua", None).id(),
        Slot::AllAgents("u").id(),
        Slot::AllAgents("ua").id(),
    ];
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn bumps_applied_by_id_invalidate_as_the_write_did() {
    let (writer, reader) = (Scopes::new(100), Scopes::new(100));
    let read = scope("u", None);
    let before = reader.current(&read);
    let write = bumps(
        &scope("u", Some("a")),
        Invalidate::Agent,
        WriteKind::Supersede,
    );
    writer.apply(&write);
    reader.apply(&write);
    assert_ne!(reader.current(&read), before);
    assert_eq!(writer.current(&read), reader.current(&read));
}

#[test]
fn eviction_never_restores_an_old_generation() {
    let scopes = Scopes::new(4);
    let target = scope("target", Some("a"));
    let recorded_before_write = scopes.current(&target);
    scopes.invalidate(&target, Invalidate::Agent, WriteKind::Supersede);
    for i in 0..100 {
        scopes.invalidate(
            &scope(&format!("user{i}"), Some("a")),
            Invalidate::Agent,
            WriteKind::Supersede,
        );
        assert!(scopes.len() <= 4);
        assert_ne!(
            scopes.current(&target),
            recorded_before_write,
            "after {i} evictions"
        );
    }
}

/// An answer fetched under `recorded` predates a purge of any of `read`'s slots.
fn predates(scopes: &Scopes, read: &Scope, recorded: Generations) -> bool {
    recorded.predates(&scopes.purges_of(&ReadSlots::of(read)))
}

#[test]
fn a_purge_rules_out_every_answer_fetched_before_it_and_a_supersede_none() {
    let scopes = Scopes::new(100);
    let read = scope("u", Some("a"));
    let before_memorize = scopes.current(&read);
    scopes.invalidate(&read, Invalidate::Agent, WriteKind::Supersede);
    assert!(
        !predates(&scopes, &read, before_memorize),
        "a memorize only supersedes"
    );
    let before_delete = scopes.current(&read);
    scopes.invalidate(&read, Invalidate::Agent, WriteKind::Purge);
    assert!(predates(&scopes, &read, before_memorize));
    assert!(predates(&scopes, &read, before_delete));
    let after_delete = scopes.current(&read);
    assert!(!predates(&scopes, &read, after_delete));
    // A memorize after the delete supersedes the answer fetched between them, keeps the purge.
    scopes.invalidate(&read, Invalidate::Agent, WriteKind::Supersede);
    assert!(!predates(&scopes, &read, after_delete));
    assert!(predates(&scopes, &read, before_delete));
}

#[test]
fn a_purge_reaches_exactly_the_reads_its_invalidation_reaches() {
    let scopes = Scopes::new(100);
    let reads = [
        scope("u", Some("a")),
        scope("u", Some("b")),
        scope("u", None),
        scope("v", Some("a")),
    ];
    let before = reads.each_ref().map(|s| scopes.current(s));
    scopes.invalidate(&reads[0], Invalidate::Agent, WriteKind::Purge);
    let purged = reads
        .iter()
        .zip(before)
        .map(|(read, recorded)| predates(&scopes, read, recorded))
        .collect::<Vec<_>>();
    assert_eq!(purged, [true, false, true, false], "delete of (u, a)");

    let before = reads.each_ref().map(|s| scopes.current(s));
    scopes.invalidate(&scope("u", None), Invalidate::AllAgents, WriteKind::Purge);
    let purged = reads
        .iter()
        .zip(before)
        .map(|(read, recorded)| predates(&scopes, read, recorded))
        .collect::<Vec<_>>();
    assert_eq!(purged, [true, true, true, false], "delete of (u, null)");

    let before = reads.each_ref().map(|s| scopes.current(s));
    scopes.invalidate(&scope("x", None), Invalidate::Everything, WriteKind::Purge);
    for (read, recorded) in reads.iter().zip(before) {
        assert!(predates(&scopes, read, recorded), "everything: {read:?}");
    }
}

#[test]
fn purges_applied_by_id_rule_out_as_the_write_did() {
    let (writer, reader) = (Scopes::new(100), Scopes::new(100));
    let read = scope("u", Some("a"));
    let recorded = reader.current(&read);
    let write = bumps(&read, Invalidate::Agent, WriteKind::Purge);
    writer.apply(&write);
    reader.apply(&write);
    assert!(predates(&reader, &read, recorded));
}

#[test]
fn eviction_never_forgets_a_purge() {
    let scopes = Scopes::new(4);
    let target = scope("target", Some("a"));
    let recorded_before_delete = scopes.current(&target);
    scopes.invalidate(&target, Invalidate::Agent, WriteKind::Purge);
    for i in 0..100 {
        let other = scope(&format!("user{i}"), Some("a"));
        scopes.invalidate(&other, Invalidate::Agent, WriteKind::Supersede);
        assert!(
            predates(&scopes, &target, recorded_before_delete),
            "after {i} evictions"
        );
    }
    // The slot comes back with a memorize: the purge still holds.
    scopes.invalidate(&target, Invalidate::Agent, WriteKind::Supersede);
    assert!(predates(&scopes, &target, recorded_before_delete));
    let after = scopes.current(&target);
    assert!(!predates(&scopes, &target, after));
}

#[test]
fn merged_bumps_keep_the_purge() {
    let id = Slot::Agent("u", None).id();
    let mut all = Vec::new();
    merge(&mut all, Bump::slot(id, WriteKind::Supersede));
    merge(&mut all, Bump::slot(id, WriteKind::Purge));
    merge(&mut all, Bump::slot(id, WriteKind::Supersede));
    merge(&mut all, Bump::everything(WriteKind::Supersede));
    assert_eq!(
        all,
        [
            Bump::slot(id, WriteKind::Purge),
            Bump::everything(WriteKind::Supersede)
        ]
    );
}
