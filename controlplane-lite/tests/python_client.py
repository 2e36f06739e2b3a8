"""The Python `kubernetes` client against controlplane-lite: HTTPS verified with the kubeconfig's
CA and a bearer token (none or a wrong one: 401), list, create, update conflicts, watches that
resume from a resourceVersion, 410 Gone for a too-old one, bookmarks, delete.
Run by python_client.rs with KUBECONFIG pointing at an in-process server. Prints PASS at the end;
any failed expectation raises."""
import copy
import sys
import threading
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
v1 = client.CoreV1Api()
conf = client.Configuration.get_default_copy()
assert conf.host.startswith("https://"), conf.host
assert conf.ssl_ca_cert and conf.verify_ssl, "the kubeconfig's CA verifies the server"

# without a token, or with a wrong one: 401 Unauthorized
for key in ({}, {"authorization": "Bearer wrong"}):
    anon = copy.copy(conf)
    anon.api_key = dict(key)
    anon.refresh_api_key_hook = None  # the kubeconfig loader's hook would put the token back
    try:
        client.CoreV1Api(client.ApiClient(anon)).list_namespace()
        raise AssertionError(f"listing with {key or 'no token'} must fail")
    except ApiException as e:
        assert e.status == 401 and '"reason":"Unauthorized"' in e.body, (e.status, e.body)


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"expected {code}, got {e.status}: {e.body}"
        return e
    raise AssertionError(f"expected HTTP {code}, the call succeeded")


# list and create
start = v1.list_namespaced_pod("default")
rv0 = start.metadata.resource_version
assert rv0, "lists carry a resourceVersion"
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py-1", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x", command=["sleep", "1"])]),
)
created = v1.create_namespaced_pod("default", pod)
assert created.metadata.uid and created.metadata.creation_timestamp
expect_status(409, v1.create_namespaced_pod, "default", pod)

# optimistic concurrency: a stale resourceVersion is a 409 Conflict
svc = v1.create_namespaced_service("default", client.V1Service(
    metadata=client.V1ObjectMeta(name="py-svc"),
    spec=client.V1ServiceSpec(selector={"app": "py"}, ports=[client.V1ServicePort(port=80)])))
assert svc.spec.cluster_ip.startswith("10.96."), svc.spec.cluster_ip
stale = svc.metadata.resource_version
svc.metadata.labels = {"v": "1"}
v1.replace_namespaced_service("py-svc", "default", svc)
svc.metadata.resource_version = stale
svc.metadata.labels = {"v": "2"}
expect_status(409, v1.replace_namespaced_service, "py-svc", "default", svc)
bad = client.V1Service(metadata=client.V1ObjectMeta(name="py-bad"),
                       spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=70000)]))
e = expect_status(422, v1.create_namespaced_service, "default", bad)
assert "spec.ports[0].port" in e.body, e.body

# a watch resuming from the first list sees what happened since, in order
seen = []
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv0, timeout_seconds=3):
    seen.append((ev["type"], ev["object"].metadata.name))
    if ("ADDED", "py-1") in seen:
        w.stop()
assert ("ADDED", "py-1") in seen, seen

# a live watch sees a change made while it runs
events = []
def watch_changes(rv):
    w2 = watch.Watch()
    for ev in w2.stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5,
                        label_selector="app=py"):
        events.append((ev["type"], ev["object"].metadata.name, dict(ev["object"].metadata.labels or {})))
        if ev["type"] == "MODIFIED":
            w2.stop()
rv = v1.list_namespaced_pod("default").metadata.resource_version
t = threading.Thread(target=watch_changes, args=(rv,))
t.start()
import time; time.sleep(0.5)
v1.patch_namespaced_pod("py-1", "default", {"metadata": {"labels": {"tier": "web"}}})
t.join()
assert any(e[0] == "MODIFIED" and e[2].get("tier") == "web" for e in events), events

# a too-old resourceVersion: 410 Gone (the client must relist)
try:
    w3 = watch.Watch()
    for ev in w3.stream(v1.list_namespaced_pod, "default", resource_version="1", timeout_seconds=2):
        pass
    raise AssertionError("a watch from resourceVersion 1 after compaction must fail")
except ApiException as e:
    assert e.status == 410, e

# bookmarks when asked for
got_bookmark = False
w4 = watch.Watch()
for ev in w4.stream(v1.list_namespaced_pod, "default", allow_watch_bookmarks=True, timeout_seconds=8,
                    resource_version=v1.list_namespaced_pod("default").metadata.resource_version):
    if ev["type"] == "BOOKMARK":
        got_bookmark = True
        w4.stop()
assert got_bookmark, "no BOOKMARK within 8 s"

# delete: an unbound pod goes at once
v1.delete_namespaced_pod("py-1", "default")
expect_status(404, v1.read_namespaced_pod, "py-1", "default")
v1.delete_namespaced_service("py-svc", "default")
print("PASS")
