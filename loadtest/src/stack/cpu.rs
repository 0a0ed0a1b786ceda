//! CPU time of the stack's processes, from /proc, so a run can show that the machine's CPU
//! was not what limited it.

use std::collections::HashMap;

use super::LocalStack;

/// utime + stime of a process so far, in seconds (Linux reports clock ticks of 100 Hz).
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds of every running service so far, with its pid: service -> (pid, seconds).
pub fn cpu_all(stack: &LocalStack) -> HashMap<String, (u32, f64)> {
    stack
        .endpoints()
        .iter()
        .filter_map(|ep| {
            let pid = stack.pid(&ep.service)?;
            Some((ep.service.clone(), (pid, process_cpu_s(pid)?)))
        })
        .collect()
}

/// CPU seconds each service used between two [`cpu_all`] readings; a process restarted in
/// between (another pid) counts from its start.
pub fn cpu_used(
    before: &HashMap<String, (u32, f64)>,
    after: &HashMap<String, (u32, f64)>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .map(|(service, (pid, now))| {
            let was = match before.get(service) {
                Some((old_pid, was)) if old_pid == pid => *was,
                _ => 0.0,
            };
            (service.clone(), now - was)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_is_read_and_restarts_count_from_zero() {
        let me = std::process::id();
        assert!(process_cpu_s(me).is_some_and(|s| s >= 0.0));
        let before = HashMap::from([("a".to_string(), (1, 2.0)), ("b".to_string(), (2, 5.0))]);
        let after = HashMap::from([("a".to_string(), (1, 3.5)), ("b".to_string(), (9, 0.25))]);
        let used = cpu_used(&before, &after);
        assert_eq!(used["a"], 1.5);
        assert_eq!(used["b"], 0.25, "a new pid counts from its start");
    }
}
