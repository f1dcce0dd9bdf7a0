#!/usr/bin/env python3
"""Where a UDP relay's CPU goes, from `perf record -g` samples.

    perf script -i perf.data -F comm,tid,ip,sym,dso | scripts/perf-classify.py [--own]

Each sample's call chain is looked at whole; the first rule (in the order
below, the more specific first) with a frame in it names the sample's
category. "deliver" is the loopback delivery done inside the sender's
system call: the receiving side's IP and UDP input, the socket lookup, the
enqueue into the receiving socket and its wake-up (on a real network this
happens on the receiving machine). --own also lists the relay's own
functions. Used by scripts/relay-profile.sh (BENCHMARKS.md, "The relay's
cost per packet: where the kernel's time goes")."""
import sys, re, collections
# (category, [symbols]) checked in this order against the whole stack
RULES = [
 ("deliver: wake receiver (sock_def_readable, ep_poll_callback, try_to_wake_up)", ["try_to_wake_up","ep_poll_callback","sock_def_readable","__wake_up_sync_key","__wake_up_common","autoremove_wake_function","pollwake"]),
 ("deliver: socket lookup (__udp4_lib_lookup)", ["__udp4_lib_lookup","udp4_lib_lookup2","udp4_lib_lookup_skb","__udp4_lib_lookup_skb"]),
 ("deliver: enqueue into receiver's socket", ["__udp_enqueue_schedule_skb","udp_queue_rcv_one_skb","udp_queue_rcv_skb","sk_filter_trim_cap"]),
 ("deliver: free skbs the receivers consumed (skb_defer_free_flush)", ["skb_defer_free_flush"]),
 ("deliver: ip_rcv, backlog, softirq rest", ["net_rx_action","handle_softirqs","do_softirq","__do_softirq"]),
 ("send: skb alloc + copy (ip_make_skb)", ["ip_make_skb","__ip_make_skb","__ip_append_data","sock_alloc_send_pskb"]),
 ("send: route lookup", ["ip_route_output_flow","ip_route_output_key_hash","ip_route_output_key_hash_rcu","fib_table_lookup","__ip_dev_find"]),
 ("send: xmit (ip_output, dev_queue_xmit, loopback_xmit)", ["ip_send_skb","ip_output","__dev_queue_xmit","loopback_xmit","netif_rx","__netif_rx"]),
 ("send: syscall, msghdr, udp_sendmsg rest", ["__sys_sendmmsg","__x64_sys_sendmmsg","___sys_sendmsg","udp_sendmsg","__sys_sendmsg","__x64_sys_sendmsg","__x64_sys_sendto","__sys_sendto","__x64_sys_write","ksys_write","sock_write_iter"]),
 ("recv: copy to user, dequeue, free", ["__x64_sys_recvmmsg","do_recvmmsg","__x64_sys_recvmsg","__x64_sys_recvfrom","__sys_recvfrom","___sys_recvmsg","__sys_recvmsg","udp_recvmsg","__x64_sys_read","ksys_read","sock_read_iter"]),
 ("wait: epoll_wait", ["do_epoll_wait","__x64_sys_epoll_wait","__x64_sys_epoll_pwait","ep_poll"]),
 ("wait: sleep, schedule, timers", ["__x64_sys_clock_nanosleep","hrtimer_nanosleep","schedule","__schedule","finish_task_switch.isra.0","finish_task_switch","__x64_sys_nanosleep","__x64_sys_select","__x64_sys_pselect6","__x64_sys_poll","__x64_sys_ppoll","__x64_sys_futex"]),
 ("other syscalls", ["do_syscall_64","entry_SYSCALL_64_after_hwframe"]),
 ("interrupts, timers (not in a syscall)", ["asm_sysvec_apic_timer_interrupt","sysvec_apic_timer_interrupt","asm_common_interrupt","irq_exit_rcu","asm_sysvec_call_function_single"]),
]
def clean(s):
    return re.sub(r"\+0x[0-9a-f]+$", "", s)
counts = collections.Counter(); total = 0
user_syms = collections.Counter()
stack = []
def flush():
    global total
    if not stack: return
    total += 1
    names = [clean(f[0]) for f in stack]
    for cat, syms in RULES:
        if any(n in syms for n in names):
            counts[cat] += 1; return
    # user space leaf
    leaf, dso = stack[0]
    if "kernel" in dso: counts["kernel, other"] += 1
    elif "libc" in dso: counts["user: libc"] += 1
    else:
        counts["user: the relay's own code"] += 1; user_syms[clean(leaf)] += 1
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        flush(); stack = []; continue
    if line.startswith("\t") or line.startswith(" "):
        m = re.match(r"\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
        if m: stack.append((m.group(1), m.group(2)))
    else:
        flush(); stack = []
flush()
for cat, n in sorted(counts.items(), key=lambda x: -x[1]):
    print(f"{100*n/total:6.1f} %  {cat}")
print(f"{total} samples")
if "--own" in sys.argv[1:]:
    for s, n in user_syms.most_common(12): print(f"   {100*n/total:5.1f} %  {s}")
