# Runs the APM iRules under tclsh against the real otp-sidecar daemon.
# Each case gets a fresh child interpreter holding only the iRule and standins.tcl, with the
# Tcl 8.5+ commands iRules lack deleted, so using one fails the case.
#
# Environment (set by tests/bigip.rs):
#   OTP_SIDECAR_BIN   the otp-sidecar binary (the ILX::call stand-in asks the daemon with it)
#   OTP_SIDECAR_UNIX  the daemon's Unix socket      OTP_SIDECAR_TCP  its TCP address
#   DOWN_ADDR         an address where nothing listens
#   SILENT_ADDR       an address that accepts connections and never answers
#   VERIFY_UNIX, VERIFY_TCP   a second daemon, a dry run in Verify mode (VE... SIDs)
# Mock Twilio: every number succeeds but +31600000000 (21211); calls answer $CA.

set here [file dirname [file normalize [info script]]]
set irules [file join $here .. .. irules]
set SID SM0123456789abcdef0123456789abcdef
set CA CA0123456789abcdef0123456789abcdef
set OTP 918273
set PHONE +31612345678
set BAD_PHONE +31600000000
set passed 0
set failed 0
set addresses 0

# Commands iRules (Tcl 8.4) do not have.
set tcl85 {dict lassign lrepeat lreverse apply chan try lmap tailcall coroutine yield zlib}

# ---- state the stand-ins share with the test ----
proc reset { args } {
    global session logs ilx_calls agent connect_raises piece ilx_down recv_timeouts client_addr
    global addresses daemon_unix
    array unset session
    set daemon_unix $::env(OTP_SIDECAR_UNIX)
    # A new end-user address per case: the daemon limits each to two sends a minute.
    incr addresses
    set client_addr "192.0.2.$addresses%1"
    set recv_timeouts 0
    array set session $args
    set logs {}
    set ilx_calls {}
    set agent twilio
    set connect_raises 1
    set piece 3
    set ilx_down 0
}

proc st_when { event body } { set ::events($event) $body }
proc st_log { facility message } { lappend ::logs "$facility $message" }
proc st_agent_id {} { return $::agent }
proc st_session_get { name } {
    if { [info exists ::session($name)] } { return $::session($name) }
    return ""
}
proc st_session_set { name value } { set ::session($name) $value }
proc st_ilx_init { plugin extension } { return "ilx:$plugin/$extension" }
proc st_client_addr {} { return $::client_addr }

# ILX::call: asks the real daemon through the bundled client, as the forwarder would.
proc st_ilx_call { handle argv } {
    lappend ::ilx_calls [concat [list $handle] $argv]
    if { $::ilx_down } { error "ILX::call: extension otp_sidecar_forwarder is not running" }
    if { [lindex $argv 0] ne "-timeout" } { error "ILX::call without -timeout" }
    if { [lindex $argv 2] eq "confirmOTP" } {
        set params [list confirm [lindex $argv 3]]
    } else {
        # As the forwarder does: otp, phone, sender, then ip, user, locale and channel for
        # the context.
        set params [concat send [lrange $argv 3 5]]
        foreach flag {--ip --user --locale --channel} value [lrange $argv 6 9] {
            if { $value ne "" } { lappend params $flag=$value }
        }
    }
    set out [exec sh -c {"$0" "$@"; echo "exit=$?"} \
        $::env(OTP_SIDECAR_BIN) {*}$params --unix $::daemon_unix]
    set lines [split $out "\n"]
    if { [lindex $lines end] eq "exit=2" } { error "ILX::call: no answer" }
    return [join [lrange $lines 0 end-1] "\n"]
}

proc st_connect_failure_raises {} { return $::connect_raises }

# connect: a real socket. Returns {status channel}, the channel "" on failure.
proc st_connect { dest } {
    set i [string last : $dest]
    if { [catch { socket [string range $dest 0 [expr {$i - 1}]] [string range $dest [expr {$i + 1}] end] } chan] } {
        return [list failed ""]
    }
    fconfigure $chan -translation binary -blocking 0
    return [list connected $chan]
}

proc st_send { chan data } {
    puts -nonewline $chan $data
    flush $chan
    return [list sent [string length $data]]
}

# recv: at most $piece bytes a call, so replies arrive split. With piece "all", it waits for
# every byte asked, as a strict reading of iRules' recv would: a rule that asks for more than
# the reply holds then times out.
proc st_recv { chan count timeout } {
    set until [expr {[clock milliseconds] + $timeout}]
    set strict [expr {$::piece eq "all"}]
    set want [expr {$strict ? $count : min($count, $::piece)}]
    set data ""
    while { 1 } {
        append data [read $chan [expr {$want - [string length $data]}]]
        if { [string length $data] == $want || (!$strict && $data ne "") } { return [list received $data] }
        if { [eof $chan] } { return [list closed $data] }
        if { [clock milliseconds] >= $until } {
            incr ::recv_timeouts
            return [list timeout $data]
        }
        after 2
    }
}

proc st_close { chan } { catch { close $chan } }

# Loads an iRule into a fresh interpreter and runs RULE_INIT; returns the interpreter.
proc load_rule { file settings } {
    array unset ::events
    set i [interp create]
    foreach name {when log agent_id session_get session_set ilx_init ilx_call client_addr connect_failure_raises connect send recv close} {
        interp alias $i __$name {} st_$name
    }
    $i eval [list source [file join $::here standins.tcl]]
    foreach cmd $::tcl85 { $i eval [list catch [list rename $cmd {}]] }
    $i eval [list source [file join $::irules $file]]
    fire $i RULE_INIT
    foreach {name value} $settings { $i eval [list set static::$name $value] }
    return $i
}

# Runs an event body as iRules would: its own scope; a Tcl error fails the case.
proc fire { i event } {
    $i eval [list proc __event {} $::events($event)]
    if { [catch { $i eval __event } err] } {
        error "Tcl error in $event: $err"
    }
}

proc status {} { st_session_get session.custom.twilio.status }

proc check { name script } {
    if { [catch { uplevel 1 $script } err] } {
        puts "FAIL $name: $err"
        incr ::failed
    } else {
        puts "ok   $name"
        incr ::passed
    }
}

proc expect { what got want } {
    if { ![string match $want $got] } { error "$what: got {$got}, want {$want}" }
}

proc logs_clean {} {
    foreach line $::logs {
        if { [string first $::OTP $line] >= 0 } { error "the OTP was logged: $line" }
        if { [string first $::PHONE $line] >= 0 } { error "the phone was logged unmasked: $line" }
    }
}

proc session_for { phone } {
    return [list session.otp.assigned.val $::OTP session.logon.last.username alice \
        session.ad.last.attr.mobile $phone]
}

# ---- the ILX iRule ----
set ilx_rule apm_otp_ilx.tcl

check "ilx: success stores the SID" {
    reset {*}[session_for $PHONE]
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] $SID
    expect call [lindex $ilx_calls 0] [list ilx:otp_sidecar_plugin/otp_sidecar_forwarder -timeout 3000 sendOTP $OTP $PHONE +14155550100 $client_addr alice "" ""]
    expect log [lindex $logs 0] "local0.info *alice*+3161****5678*$SID*"
    logs_clean
}

check "ilx: a Twilio error is stored as ERR" {
    reset {*}[session_for $BAD_PHONE]
    set i [load_rule $ilx_rule {otp_ilx_sender ACME}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR twilio 21211: *"
    expect sender [lindex [lindex $ilx_calls 0] 6] ACME
    logs_clean
}

check "ilx: the phone from the configured session variable" {
    reset session.otp.assigned.val $OTP session.custom.phone $PHONE
    set i [load_rule $ilx_rule {otp_ilx_phone_var session.custom.phone}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] $SID
}

foreach {missing var} {otp session.otp.assigned.val phone session.ad.last.attr.mobile} {
    check "ilx: no $missing: ERR bad_request, no call" {
        reset {*}[session_for $PHONE] $var ""
        set i [load_rule $ilx_rule {}]
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect status [status] "ERR bad_request: no *"
        expect calls [llength $ilx_calls] 0
        expect log [lindex $logs 0] "local0.warn *OTP not sent*"
    }
}

check "ilx: extension down: ERR unavailable, no Tcl error" {
    reset {*}[session_for $PHONE]
    set ilx_down 1
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR unavailable: *"
    logs_clean
}

check "ilx: the end user's address and name reach the daemon's rate limits" {
    reset {*}[session_for $PHONE] session.ui.lang nl-NL
    set i [load_rule $ilx_rule {}]
    # The daemon allows two sends a minute per address; the third is refused.
    foreach want [list $SID $SID "ERR rate_limited: retry in *"] {
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect status [status] $want
    }
    expect call [lrange [lindex $ilx_calls 0] 7 9] [list $client_addr alice nl-NL]
}

check "ilx: another agent id: nothing happens" {
    reset {*}[session_for $PHONE]
    set agent other
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] ""
    expect calls [llength $ilx_calls] 0
}

set VE_RE {^VE[0-9a-f]{32}$}

check "ilx: the channel from the configured session variable: a call's CA SID" {
    reset {*}[session_for $PHONE] session.custom.channel voice
    set i [load_rule $ilx_rule {otp_ilx_channel_var session.custom.channel}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] $CA
    expect channel [lindex [lindex $ilx_calls 0] 10] voice
    expect log [lindex $logs 0] "local0.info *sent $CA*"
    logs_clean
}

check "ilx: Verify mode: the VE SID is stored and confirmed after OTP Verify" {
    reset {*}[session_for $PHONE]
    set daemon_unix $env(VERIFY_UNIX)
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    set ve [status]
    if { ![regexp $VE_RE $ve] } { error "status {$ve} is not a VE SID" }
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] $ve
    expect call [lindex $ilx_calls 1] [list ilx:otp_sidecar_plugin/otp_sidecar_forwarder -timeout 3000 confirmOTP $ve]
    expect log [lindex $logs end] "local0.info *confirmed $ve"
    logs_clean
}

check "ilx: confirm without a VE status names the phone" {
    reset {*}[session_for $PHONE]
    set daemon_unix $env(VERIFY_UNIX)
    set agent twilio_confirm
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect target [lindex [lindex $ilx_calls 0] 4] $PHONE
    if { ![regexp $VE_RE [st_session_get session.custom.twilio.confirm]] } { error "not confirmed" }
    logs_clean
}

check "ilx: confirm against a daemon not in Verify mode: ERR stored and logged" {
    reset {*}[session_for $PHONE]
    set agent twilio_confirm
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] "ERR bad_request: confirmOTP needs Verify mode*"
    expect status [status] ""
    expect log [lindex $logs 0] "local0.warn *confirm failed*"
    logs_clean
}

# ---- the sideband iRule ----
set sb_rule apm_otp_sideband.tcl

foreach size {1 2 3 7 64 all} {
    check "sideband: success, reply in pieces of $size" {
        reset {*}[session_for $PHONE]
        set piece $size
        set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)]]
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect status [status] $SID
        # Never asked for bytes the reply does not hold (a strict recv would wait for them).
        expect "recv timeouts" $recv_timeouts 0
        expect log [lindex $logs 0] "local0.info *+3161****5678*$SID*"
        logs_clean
    }
}

check "sideband: the end user's address reaches the daemon's rate limits" {
    reset {*}[session_for $PHONE] session.ui.lang nl-NL
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)]]
    foreach want [list $SID $SID "ERR rate_limited: retry in *"] {
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect status [status] $want
    }
    logs_clean
}

check "sideband: a Twilio error is stored as ERR" {
    reset {*}[session_for $BAD_PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR twilio 21211: *"
    logs_clean
}

check "sideband: long values use str8 and the daemon's own checks" {
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP) otp_sb_sender [string repeat A 40]]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR bad_request: sender *"
}

check "sideband: a long sender in str16 is read by the daemon" {
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP) otp_sb_sender [string repeat B 300]]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR bad_request: sender *"
}

check "sideband: no phone: ERR bad_request" {
    reset {*}[session_for ""]
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR bad_request: no phone number*"
}

foreach raises {1 0} {
    check "sideband: daemon down (connect raises: $raises): ERR unavailable" {
        reset {*}[session_for $PHONE]
        set connect_raises $raises
        set i [load_rule $sb_rule [list otp_sb_dest $env(DOWN_ADDR)]]
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect status [status] "ERR unavailable: cannot connect to otp-sidecar*failed*"
    }
}

check "sideband: a silent daemon: ERR timeout at the configured limit" {
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(SILENT_ADDR) otp_sb_timeout_ms 400]]
    set started [clock milliseconds]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR timeout: *"
    if { [clock milliseconds] - $started > 2500 } { error "took too long" }
}

check "sideband: the channel from the configured session variable: a call's CA SID" {
    reset {*}[session_for $PHONE] session.custom.channel voice
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP) otp_sb_channel_var session.custom.channel]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] $CA
    logs_clean
}

check "sideband: Verify mode: the VE SID is stored and confirmed after OTP Verify" {
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(VERIFY_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    set ve [status]
    if { ![regexp $VE_RE $ve] } { error "status {$ve} is not a VE SID" }
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] $ve
    expect log [lindex $logs end] "local0.info *confirmed $ve"
    # Without a VE status the phone is named, and the daemon confirms by it.
    st_session_set session.custom.twilio.status ""
    fire $i ACCESS_POLICY_AGENT_EVENT
    if { ![regexp $VE_RE [st_session_get session.custom.twilio.confirm]] } { error "not confirmed" }
    logs_clean
}

check "sideband: confirm against a daemon not in Verify mode: ERR stored" {
    reset {*}[session_for $PHONE]
    set agent twilio_confirm
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] "ERR bad_request: confirmOTP needs Verify mode*"
    expect log [lindex $logs 0] "local0.warn *confirm failed*"
}

check "sideband: the request bytes" {
    reset
    set i [load_rule $sb_rule {}]
    set bytes [$i eval {call mp_request 300 sendOTP [call mp_send_params 1234 +1 AB "" "" "" ""]}]
    binary scan $bytes H* hex
    expect bytes $hex "9400cd012ca773656e644f545093a431323334a22b31a24142"
    # With a context: a fourth param, a map of only the values given.
    set bytes [$i eval {call mp_request 1 sendOTP [call mp_send_params 1234 +1 AB 10.0.0.1 "" en ""]}]
    binary scan $bytes H* hex
    expect bytes $hex "940001a773656e644f545094a431323334a22b31a2414282a26970a831302e302e302e31a66c6f63616c65a2656e"
}

check "sideband: the decoder refuses what is not a reply" {
    reset
    set i [load_rule $sb_rule {}]
    expect garbage [$i eval [list call mp_reply [binary format H* c1]]] "bad *"
    expect request [$i eval [list call mp_reply [binary format H* 9400]]] "bad *"
    expect partial [$i eval [list call mp_reply [binary format H* 9401cd01]]] "more 1"
    expect str [$i eval [list call mp_reply [binary format H* 940101c0d903]]] "more 3"
}

puts "tclsh: $passed passed, $failed failed"
exit [expr {$failed > 0}]
