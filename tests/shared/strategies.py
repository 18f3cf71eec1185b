"""Hypothesis strategies for the wire messages (valid by construction)."""

from __future__ import annotations

from hypothesis import strategies as st

from shared import messages as m

names = st.text(min_size=1, max_size=24)
texts = st.text(max_size=64)
site_ids = st.from_regex(r"\A[a-z0-9][a-z0-9-]{1,20}\Z")
hub_ids = st.from_regex(r"\Ahub-[a-z0-9][a-z0-9-]{0,12}\Z")
seqs = st.integers(min_value=0, max_value=m.MAX_UINT64)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
sha = st.from_regex(r"\A[0-9a-f]{64}\Z")


def _record_common() -> dict[str, st.SearchStrategy[object]]:
    return {
        "seq": seqs,
        "ts": timestamps,
        "prio": st.sampled_from(m.Priority),
        "historical": st.booleans(),
    }


readings = st.builds(
    m.Reading, device=names, point=names, value=scalars, quality=st.sampled_from(m.Quality),
    unit=st.text(max_size=8), **_record_common(),
)
events = st.builds(
    m.Event, kind=names, device=st.none() | names, detail=texts,
    values=st.dictionaries(names, scalars, max_size=4), **_record_common(),
)
replies = st.builds(
    m.Reply, cmd_id=names, status=st.sampled_from(m.ReplyStatus), reason=texts, **_record_common()
)
records = st.one_of(readings, events, replies)

statuses = st.builds(m.Status, site=site_ids, state=st.sampled_from(m.SiteState), boot=names, ts=timestamps)
births = st.builds(
    m.Birth, site=site_ids, agent_version=names, boot=names, ts=timestamps,
    devices=st.lists(
        st.builds(m.DeviceInfo, id=names, kind=names, profile=names, profile_sha256=sha,
                  points=st.lists(names, max_size=5)),
        max_size=4,
    ),
    models=st.lists(st.builds(m.ModelInfo, name=names, sha256=st.none() | sha, health=names), max_size=2),
)
epochs = st.integers(min_value=0, max_value=m.MAX_EPOCH)
batches = st.builds(
    m.DataBatch, site=site_ids, boot=names, records=st.lists(records, max_size=20), floor_seq=st.none() | seqs,
    epoch=epochs, thinned=st.lists(st.tuples(seqs, seqs).map(sorted).map(tuple), max_size=3),
)
commands = st.builds(
    m.Command, cmd_id=names, site=site_ids, device=names, action=st.sampled_from(m.Action),
    params=st.dictionaries(names, scalars, max_size=3), issued_by=names,
    approved_by=st.lists(names, max_size=2), issued_at=timestamps, not_after=timestamps, reason=texts,
)
acks = st.one_of(
    st.builds(m.Ack, site=site_ids, through_seq=seqs, epoch=epochs),
    st.builds(m.Ack, site=site_ids, resend_from=seqs, epoch=epochs),
    st.builds(m.Ack, site=site_ids, through_seq=seqs, resend_from=seqs, epoch=epochs),
)
hub_statuses = st.builds(m.HubStatus, hub=hub_ids, state=st.sampled_from(m.SiteState), ts=timestamps)
