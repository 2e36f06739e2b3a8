"""The Python `kubernetes` client (PyPI) against switchyard-cp, as a user's script uses it.
Run by python_compat.rs with KUBECONFIG set. Phase `main` exercises list/create/delete,
selectors, 409/422/404 Status objects, watch resume from a resourceVersion and bookmarks, then
prints `RV=<n>`; the server is restarted (its watch history is gone) and phase `after-restart RV`
expects 410 Gone from a watch at that resourceVersion, relists and watches again.
Prints PASS at the end; any failed expectation raises."""
import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
v1 = client.CoreV1Api()
disc = client.DiscoveryV1Api()
NS = "default"


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"expected {code}, got {e.status}: {e.body}"
        return json.loads(e.body)
    raise AssertionError(f"expected HTTP {code}, the call succeeded")


def pod(name, labels):
    # Left to a scheduler that is not running (no node exists either), so the only changes a
    # watch sees are this script's.
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(scheduler_name="manual",
                              containers=[client.V1Container(name="c", image="echo")]),
    )


def events_from(rv, timeout=1, **kw):
    """Every event of a watch from rv until it times out (the server ends it)."""
    out = []
    for ev in watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=rv,
                                   timeout_seconds=timeout, **kw):
        out.append((ev["type"], ev["object"].metadata.name if ev["type"] != "BOOKMARK" else None))
    return out


def main():
    # list, create, get
    start = v1.list_namespaced_pod(NS)
    assert start.items == [] and start.metadata.resource_version
    rv0 = start.metadata.resource_version
    a = v1.create_namespaced_pod(NS, pod("py-a", {"app": "py", "env": "prod"}))
    # kube-apiserver 1.32 gives pods no generation
    assert a.metadata.uid and a.metadata.creation_timestamp and a.metadata.generation is None
    assert a.status.phase == "Pending", a.status
    v1.create_namespaced_pod(NS, pod("py-b", {"app": "py", "env": "qa", "canary": "yes"}))
    names = lambda **kw: sorted(p.metadata.name for p in v1.list_namespaced_pod(NS, **kw).items)
    assert names() == ["py-a", "py-b"]
    assert names(label_selector="env in (prod,qa),!canary") == ["py-a"]
    assert names(label_selector="env notin (prod)") == ["py-b"]
    assert names(field_selector="metadata.name=py-b") == ["py-b"]
    assert [p.metadata.name for p in v1.list_pod_for_all_namespaces(label_selector="app=py").items] == ["py-a", "py-b"]
    assert v1.read_namespaced_pod("py-a", NS).metadata.uid == a.metadata.uid

    # Status objects: 409 AlreadyExists, 409 Conflict, 422 Invalid with causes, 404
    st = expect_status(409, v1.create_namespaced_pod, NS, pod("py-a", {}))
    assert st["reason"] == "AlreadyExists" and st["details"]["name"] == "py-a", st
    assert st["message"] == 'pods "py-a" already exists', st
    svc = v1.create_namespaced_service(NS, client.V1Service(
        metadata=client.V1ObjectMeta(name="py-svc"),
        spec=client.V1ServiceSpec(selector={"app": "py"}, ports=[client.V1ServicePort(port=80)])))
    assert svc.spec.cluster_ip.startswith("10.96."), svc.spec.cluster_ip
    assert svc.spec.ports[0].target_port == 80
    stale = svc.metadata.resource_version
    svc.metadata.labels = {"v": "1"}
    svc = v1.replace_namespaced_service("py-svc", NS, svc)
    svc.metadata.resource_version = stale
    st = expect_status(409, v1.replace_namespaced_service, "py-svc", NS, svc)
    assert st["reason"] == "Conflict", st
    bad = client.V1Service(metadata=client.V1ObjectMeta(name="py-bad"),
                           spec=client.V1ServiceSpec(type="NodePort", ports=[
                               client.V1ServicePort(port=70000, name="a"),
                               client.V1ServicePort(port=80, name="a", node_port=20000)]))
    st = expect_status(422, v1.create_namespaced_service, NS, bad)
    assert st["reason"] == "Invalid" and st["details"]["kind"] == "Service", st
    causes = {(c["reason"], c["field"]) for c in st["details"]["causes"]}
    assert causes == {("FieldValueInvalid", "spec.ports[0].port"),
                      ("FieldValueDuplicate", "spec.ports[1].name"),
                      ("FieldValueInvalid", "spec.ports[1].nodePort")}, causes
    st = expect_status(404, v1.read_namespaced_service, "nope", NS)
    assert st["reason"] == "NotFound" and st["message"] == 'services "nope" not found', st

    # a watch resuming from rv0 replays exactly what happened since, in order
    got = events_from(rv0)
    assert got == [("ADDED", "py-a"), ("ADDED", "py-b")], got
    rv1 = v1.list_namespaced_pod(NS).metadata.resource_version
    v1.patch_namespaced_pod("py-a", NS, {"metadata": {"labels": {"tier": "web"}}})
    v1.delete_namespaced_pod("py-b", NS)
    got = events_from(rv1)
    assert got == [("MODIFIED", "py-a"), ("DELETED", "py-b")], got
    # a label-filtered watch reports an object leaving the selection as DELETED
    got = events_from(rv1, label_selector="env=qa")
    assert got == [("DELETED", "py-b")], got

    # a live watch sees changes made while it runs
    seen = []
    def follow(rv):
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()
    t = threading.Thread(target=follow, args=(v1.list_namespaced_pod(NS).metadata.resource_version,))
    t.start()
    time.sleep(0.5)
    v1.create_namespaced_pod(NS, pod("py-c", {"app": "py"}))
    v1.delete_namespaced_pod("py-c", NS, body=client.V1DeleteOptions(grace_period_seconds=0))
    t.join()
    assert seen == [("ADDED", "py-c"), ("DELETED", "py-c")], seen

    # bookmarks when asked, carrying the latest resourceVersion; none when not asked
    rv2 = v1.list_namespaced_pod(NS).metadata.resource_version
    plain = []
    t = threading.Thread(target=lambda: plain.extend(events_from(rv2, timeout=6)))
    t.start()
    marks = []
    for ev in watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=rv2,
                                   allow_watch_bookmarks=True, timeout_seconds=6):
        if ev["type"] == "BOOKMARK":
            marks.append(ev["raw_object"]["metadata"]["resourceVersion"])
    assert marks and int(marks[-1]) >= int(rv2), marks
    t.join()
    assert plain == [], plain

    # endpointslices through the discovery.k8s.io/v1 client
    deadline = time.time() + 5
    while not disc.list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=py-svc").items:
        assert time.time() < deadline, "no EndpointSlice for py-svc"
        time.sleep(0.1)

    # delete: an unscheduled pod goes at once; deleting twice is a 404
    v1.delete_namespaced_pod("py-a", NS)
    expect_status(404, v1.read_namespaced_pod, "py-a", NS)
    expect_status(404, v1.delete_namespaced_pod, "py-a", NS)
    # An early resourceVersion, which the restarted server will no longer have history for.
    print(f"RV={rv1}")


def after_restart(old_rv):
    # The restarted server has no history before its start: a watch from the old RV is 410 Gone
    # (kube-apiserver answers so for a compacted resourceVersion) ...
    try:
        for _ in watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=old_rv,
                                      timeout_seconds=3):
            pass
        raise AssertionError("a watch from a compacted resourceVersion must fail")
    except ApiException as e:
        assert e.status == 410, e
    # ... so the client relists (objects and the resourceVersion sequence survived) and
    # watches from the fresh resourceVersion.
    fresh = v1.list_namespaced_pod(NS)
    assert int(fresh.metadata.resource_version) >= int(old_rv)
    assert v1.read_namespaced_service("py-svc", NS).metadata.labels == {"v": "1"}
    seen = []
    def follow(rv):
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            w.stop()
    t = threading.Thread(target=follow, args=(fresh.metadata.resource_version,))
    t.start()
    time.sleep(0.5)
    v1.create_namespaced_pod(NS, pod("py-d", {"app": "py"}))
    t.join()
    assert seen == [("ADDED", "py-d")], seen


if sys.argv[1] == "main":
    main()
else:
    after_restart(sys.argv[2])
print("PASS")
