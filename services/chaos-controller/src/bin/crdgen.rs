//! Prints the FaultInjection CustomResourceDefinition as YAML (what `k8s/crds/` holds).

fn main() {
    print!("{}", chaos_controller::crd::crd_yaml());
}
