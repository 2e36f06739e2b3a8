//! LoadBalancer Services with `--loadbalancer-pool`, as MetalLB gives addresses on bare metal,
//! seen with kubectl: the lowest free address or the requested `loadBalancerIP`, `<pending>`
//! when the pool is used up, released on deletion or a type change, kept across a restart; and
//! `allocateLoadBalancerNodePorts: false` allocating no node ports.
mod harness;

use harness::{eventually, rows, Cp};

fn lb(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n{extra}"
    )
}

/// EXTERNAL-IP of `name` in `kubectl get svc`.
fn external_ip(cp: &Cp, name: &str) -> String {
    let table = rows(&cp.kubectl(&["get", "svc", name]).ok());
    table[1][3].clone()
}

/// Waits until `name` shows `want` as its EXTERNAL-IP.
#[track_caller]
fn shows(cp: &Cp, name: &str, want: &str) {
    eventually(10, &format!("{name} shows EXTERNAL-IP {want}"), || {
        (external_ip(cp, name) == want).then_some(())
    });
}

#[test]
fn load_balancers_get_pool_addresses_that_are_released_and_survive_restarts() {
    // A /30: two assignable addresses, .1 and .2.
    let mut cp = Cp::start_with(&["--loadbalancer-pool", "198.18.100.0/30"]);
    cp.apply(&lb("a", ""));
    shows(&cp, "a", "198.18.100.1");
    assert_eq!(
        cp.jsonpath(&["svc", "a"], "{.status.loadBalancer.ingress[0].ipMode}"),
        "VIP"
    );
    cp.apply(&lb("b", "  loadBalancerIP: 198.18.100.2\n"));
    shows(&cp, "b", "198.18.100.2");
    cp.apply(&lb("c", ""));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(external_ip(&cp, "c"), "<pending>", "the pool is used up");
    cp.kubectl(&["delete", "svc", "a"]).ok();
    shows(&cp, "c", "198.18.100.1");
    cp.kubectl(&[
        "patch",
        "svc",
        "b",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP","loadBalancerIP":null}}"#,
    ])
    .ok();
    eventually(10, "b lost its address", || {
        let ingress = cp.jsonpath(&["svc", "b"], "{.status.loadBalancer.ingress}");
        ingress.is_empty().then_some(())
    });
    cp.restart();
    assert_eq!(
        external_ip(&cp, "c"),
        "198.18.100.1",
        "kept across the restart"
    );
    cp.apply(&lb("d", ""));
    shows(&cp, "d", "198.18.100.2");
}

#[test]
fn without_a_pool_or_with_a_class_load_balancers_stay_pending() {
    let cp = Cp::start_with(&["--loadbalancer-pool", "198.18.100.0/24"]);
    cp.apply(&lb("classy", "  loadBalancerClass: example.com/other\n"));
    cp.apply(&lb("outside", "  loadBalancerIP: 203.0.113.9\n"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(external_ip(&cp, "classy"), "<pending>");
    assert_eq!(external_ip(&cp, "outside"), "<pending>");
    let bare = Cp::start();
    bare.apply(&lb("web", ""));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(external_ip(&bare, "web"), "<pending>");
}

#[test]
fn allocate_load_balancer_node_ports_false_allocates_none_but_keeps_requested_ones() {
    let cp = Cp::start();
    cp.apply(&lb("none", "  allocateLoadBalancerNodePorts: false\n"));
    assert_eq!(
        cp.jsonpath(&["svc", "none"], "{.spec.ports[0].nodePort}"),
        ""
    );
    let table = rows(&cp.kubectl(&["get", "svc", "none"]).ok());
    assert_eq!(table[1][4], "80/TCP");
    cp.apply(
        &lb("asked", "  allocateLoadBalancerNodePorts: false\n")
            .replace("[{port: 80}]", "[{port: 80, nodePort: 30080}]"),
    );
    assert_eq!(
        cp.jsonpath(&["svc", "asked"], "{.spec.ports[0].nodePort}"),
        "30080"
    );
}
