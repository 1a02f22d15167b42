# Runs the APM iRules under tclsh against the real otp-sidecar daemon.
# Each case gets a fresh child interpreter holding only the iRule and standins.tcl, with the
# Tcl 8.5+ commands iRules lack and the commands iRules disable (encoding) deleted, so using
# one fails the case. ILX::call runs the real ILX forwarder under Node (ilx_host.js).
#
# Environment (set by tests/daemon/bigip.rs):
#   OTP_SIDECAR_UNIX  the daemon's Unix socket      OTP_SIDECAR_TCP  its TCP address
#   USERS_SB_TCP, USERS_ILX_UNIX   two more daemons, each allowing one send per user an hour
#                     (one for each iRule), where a user name's bytes decide the limit's key
#   DOWN_ADDR         an address where nothing listens
#   SILENT_ADDR       an address that accepts connections and never answers
#   VERIFY_UNIX, VERIFY_TCP   a second daemon, a dry run in Verify mode (VE... SIDs)
#   TOKENS_UNIX, TOKENS_TCP   the same with a caller tokens file naming CALLER_TOKEN
#   ILX_NODE          optional: the node binary that runs the forwarder (default: node on PATH)
# Mock Twilio: every number succeeds but +31600000000 (21211, Twilio's text naming the number) and +31600000002 (21614, with a
# message that is not ASCII); calls answer $CA.

set here [file dirname [file normalize [info script]]]
set irules [file join $here .. .. irules]
set SID SM0123456789abcdef0123456789abcdef
set CA CA0123456789abcdef0123456789abcdef
set OTP 918273
set PHONE +31612345678
set BAD_PHONE +31600000000
set FRENCH_PHONE +31600000002
set FRENCH_ERROR "ERR twilio 21614: Le num\u00e9ro \u00ab To \u00bb n\u2019est pas un mobile"
set passed 0
set failed 0
set addresses 0

# Commands iRules (Tcl 8.4) do not have.
set tcl85 {dict lassign lrepeat lreverse apply chan try lmap tailcall coroutine yield zlib}
# Commands iRules disable.
set disabled {encoding}

# ---- state the stand-ins share with the test ----
proc reset { args } {
    global session logs ilx_calls agent connect_raises piece ilx_down recv_timeouts client_addr
    global addresses daemon_unix sent
    array unset session
    set daemon_unix $::env(OTP_SIDECAR_UNIX)
    # A new end-user address per case: the daemon limits each to two sends a minute.
    incr addresses
    set client_addr "192.0.2.$addresses%1"
    set recv_timeouts 0
    array set session $args
    set logs {}
    set ilx_calls {}
    set sent {}
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

# ILX::call: the real forwarder under Node, one process per daemon socket, relays the call to
# the real daemon. The arguments cross as UTF-8 and arrive as JS strings, as ILX carries them;
# the bytes the forwarder wrote to the daemon are kept in ::sent.
proc st_ilx_call { handle argv } {
    lappend ::ilx_calls [concat [list $handle] $argv]
    if { $::ilx_down } { error "ILX::call: extension otp_sidecar_forwarder is not running" }
    if { [lindex $argv 0] ne "-timeout" } { error "ILX::call without -timeout" }
    set host [ilx_host $::daemon_unix]
    set line [lindex $argv 2]
    foreach arg [lrange $argv 3 end] {
        binary scan [encoding convertto utf-8 $arg] H* hex
        append line " $hex"
    }
    puts $host $line
    if { [gets $host answer] < 0 } { error "ILX::call: the extension ended" }
    lappend ::sent [binary format H* [lindex $answer 1]]
    return [encoding convertfrom utf-8 [binary format H* [lindex $answer 0]]]
}

proc ilx_host { unix } {
    if { ![info exists ::ilx_hosts($unix)] } {
        set stubs [file join $::here .. ilx stubs]
        set node node
        if { [info exists ::env(ILX_NODE)] && $::env(ILX_NODE) ne "" } { set node $::env(ILX_NODE) }
        set host [open |[list env OTP_SIDECAR_UNIX=$unix NODE_PATH=$stubs \
            $node [file join $::here ilx_host.js] 2>@ stderr] r+]
        fconfigure $host -translation lf -encoding ascii -buffering line
        set ::ilx_hosts($unix) $host
    }
    return $::ilx_hosts($unix)
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
    lappend ::sent $data
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
    foreach cmd [concat $::tcl85 $::disabled] { $i eval [list catch [list rename $cmd {}]] }
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

# Whether got holds want as it is (no glob: masks are made of stars).
proc expect_has { what got want } {
    if { [string first $want $got] < 0 } { error "$what: got {$got}, want it to hold {$want}" }
}

# No digit run of six or more (separators aside) that could be a phone number.
proc no_number { what text } {
    regsub -all {[ ()./-]} $text "" squeezed
    if { [regexp {[0-9]{6,}} $squeezed number] } { error "$what holds a number ($number): $text" }
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
    expect log [lindex $logs 0] "local0.info *alice*$SID*"
    expect_has log [lindex $logs 0] "phone +31*****5678:"
    logs_clean
}

check "ilx: a Twilio error is stored as ERR" {
    reset {*}[session_for $BAD_PHONE]
    set i [load_rule $ilx_rule {otp_ilx_sender ACME}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] "ERR twilio 21211: *"
    expect sender [lindex [lindex $ilx_calls 0] 6] ACME
    # Twilio's text named the number; neither the status nor the log does.
    no_number status [status]
    foreach line $logs { no_number log $line }
    logs_clean
}

# The masking rule's table (tests/irules/masks.txt), the daemon's own, through each iRule's
# otp_mask; then numbers as directories write them.
set masks {}
set f [open [file join $here masks.txt]]
while { [gets $f row] >= 0 } {
    if { $row ne "" && [string index $row 0] ne "#" } { lappend masks [lindex $row 0] [lindex $row 1] }
}
close $f
lappend masks {+31 (0)6-1234 5678} +31******5678 {06 12345678} ******5678 {+1 (415) 555.0100} +1******0100 \
    abc **** {+31 6 1234 x} **** "" ****
foreach rule {apm_otp_ilx.tcl apm_otp_sideband.tcl} {
    check "$rule: otp_mask follows the daemon's masking rule" {
        reset
        set i [load_rule $rule {}]
        foreach {phone want} $masks {
            set got [$i eval [list call otp_mask $phone]]
            if { $got ne $want } { error "otp_mask {$phone}: got {$got}, want {$want}" }
        }
    }
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

check "ilx: Messages mode: confirm names the phone and stores the SM SID sent to it" {
    reset {*}[session_for $PHONE]
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] $SID
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect target [lindex [lindex $ilx_calls 1] 4] $PHONE
    expect confirm [st_session_get session.custom.twilio.confirm] $SID
    expect log [lindex $logs end] "local0.info *confirmed $SID"
    logs_clean
}

check "ilx: Messages mode: confirm of a number nothing was sent to: ERR stored and logged" {
    reset {*}[session_for +31699999999]
    set agent twilio_confirm
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] "ERR bad_request: no message was sent to this number*"
    expect status [status] ""
    expect log [lindex $logs 0] "local0.warn *confirm failed*"
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
        expect log [lindex $logs 0] "local0.info *$SID*"
        expect_has log [lindex $logs 0] "phone +31*****5678:"
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
    no_number status [status]
    foreach line $logs { no_number log $line }
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

check "sideband: Messages mode: confirm names the phone and stores the SM SID sent to it" {
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect status [status] $SID
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] $SID
    expect log [lindex $logs end] "local0.info *confirmed $SID"
    # A number nothing was sent to: the ERR is stored and logged.
    reset {*}[session_for +31699999999]
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] "ERR bad_request: no message was sent to this number*"
    expect log [lindex $logs 0] "local0.warn *confirm failed*"
}

check "sideband: the request bytes" {
    reset
    set i [load_rule $sb_rule {}]
    set bytes [$i eval {call mp_request 300 sendOTP [call mp_send_params 1234 +1 AB "" "" "" "" ""]}]
    binary scan $bytes H* hex
    expect bytes $hex "9400cd012ca773656e644f545093a431323334a22b31a24142"
    # With a context: a fourth param, a map of only the values given.
    set bytes [$i eval {call mp_request 1 sendOTP [call mp_send_params 1234 +1 AB 10.0.0.1 "" en "" ""]}]
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

# ---- non-ASCII: both iRules send UTF-8 (Tcl 8.4, no `encoding`) ----

# What a correct encoder sends for s: its str header (counting bytes) and UTF-8 bytes, in hex.
proc str_hex { s } {
    set b [encoding convertto utf-8 $s]
    set n [string length $b]
    if { $n < 32 } {
        set head [binary format c [expr {0xa0 | $n}]]
    } elseif { $n < 256 } {
        set head [binary format cc 0xd9 $n]
    } elseif { $n < 65536 } {
        set head [binary format cS 0xda $n]
    } else {
        set head [binary format cI 0xdb $n]
    }
    binary scan $head$b H* hex
    return $hex
}

# The last request's bytes (as written to the daemon's socket) carry key: value as UTF-8.
proc expect_sent { key value } {
    binary scan [lindex $::sent end] H* hex
    set want "[str_hex $key][str_hex $value]"
    if { [string first $want $hex] < 0 } {
        error "the request does not carry $key as {$want}: $hex"
    }
}

# The same characters as TMM may hand them over: their UTF-8 bytes, one character each.
proc as_bytes { s } { return [encoding convertto utf-8 $s] }

# User names, with ASCII labels for the output. 16 e-acutes are 32 bytes (str8 although 16
# characters), 128 are 256 bytes (str16); 20 N-tildes are 40 bytes (str8, header d9 28).
set NAMES [list \
    "Jose Mueller" "Jos\u00e9 M\u00fcller" \
    "Lukasz" "\u0141ukasz" \
    "Tanaka" "\u7530\u4e2d" \
    "20 N-tilde" [string repeat \u00d1 20] \
    "16 e-acute" [string repeat \u00e9 16] \
    "128 e-acute" [string repeat \u00e9 128] \
]

# Each name is sent once as characters and once as UTF-8 bytes: the daemon allows one send
# per user an hour, so the second is refused exactly when both reached it as the same bytes.
# What the old encoder sent (each character's low 8 bits: Aukasz, 0-) is another user.
proc names_case { rule settings unix } {
    foreach {label name} $::NAMES {
        reset {*}[session_for $::PHONE] session.logon.last.username $name
        if { $unix ne "" } { set ::daemon_unix $unix }
        set i [load_rule $rule $settings]
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect "$label: status" [status] $::SID
        expect_sent user $name
        st_session_set session.logon.last.username [as_bytes $name]
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect "$label as UTF-8 bytes: status" [status] "ERR rate_limited: *"
        expect_sent user $name
        set low [binary format a* $name]
        if { $low ne $name } {
            st_session_set session.logon.last.username $low
            fire $i ACCESS_POLICY_AGENT_EVENT
            expect "$label's low bytes, another user: status" [status] $::SID
        }
        logs_clean
    }
}

check "sideband: non-ASCII user names reach the daemon as UTF-8, characters or bytes" {
    names_case $sb_rule [list otp_sb_dest $env(USERS_SB_TCP)] ""
}

check "ilx: non-ASCII user names reach the daemon as UTF-8, characters or bytes" {
    names_case $ilx_rule {} $env(USERS_ILX_UNIX)
}

# The daemon's view of such a locale is its own business; what it is sent is the rule's.
foreach {rule settings} [list $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)] $ilx_rule {}] {
    check "$rule: the locale es-\\u00f1 reaches the daemon as UTF-8, characters or bytes" {
        foreach locale [list "es-\u00f1" [as_bytes "es-\u00f1"]] {
            reset {*}[session_for $PHONE] session.ui.lang $locale
            set i [load_rule $rule $settings]
            fire $i ACCESS_POLICY_AGENT_EVENT
            expect_sent locale "es-\u00f1"
            if { [status] eq "" } { error "no status stored" }
        }
    }
}

foreach {rule settings} [list $sb_rule [list otp_sb_dest $env(OTP_SIDECAR_TCP)] $ilx_rule {}] {
    check "$rule: a Twilio message that is not ASCII is stored as its characters" {
        reset {*}[session_for $FRENCH_PHONE]
        set i [load_rule $rule $settings]
        fire $i ACCESS_POLICY_AGENT_EVENT
        expect status [status] $FRENCH_ERROR
        expect log [lindex $logs 0] "local0.warn *$FRENCH_ERROR"
    }
}

check "sideband: mp_str counts UTF-8 bytes: fixstr, str8, str16 and str32 at their edges" {
    reset
    set i [load_rule $sb_rule {}]
    foreach {bytes s} [list \
        31 "[string repeat \u00e9 15]a" \
        32 [string repeat \u00e9 16] \
        33 [string repeat \u7530 11] \
        40 [string repeat \u00d1 20] \
        255 "[string repeat \u00e9 127]a" \
        256 [string repeat \u00e9 128] \
        65535 "[string repeat \u00e9 32767]a" \
        65536 [string repeat \u00e9 32768] \
    ] {
        if { [string length [as_bytes $s]] != $bytes } { error "the $bytes-byte sample is wrong" }
        binary scan [$i eval [list call mp_str $s]] H* hex
        expect "$bytes bytes" $hex [str_hex $s]
        # The same string as UTF-8 bytes is sent as it is.
        binary scan [$i eval [list call mp_str [as_bytes $s]]] H* hex
        expect "$bytes bytes given as bytes" $hex [str_hex $s]
    }
}

check "sideband: mp_str: surrogate pairs, lone surrogates, NUL, Latin-1 and invalid bytes" {
    reset
    set i [load_rule $sb_rule {}]
    foreach {s want} [list \
        [format %c%c 0xd83d 0xde00] a4f09f9880 \
        "\xf0\x9f\x98\x80" a4f09f9880 \
        "Jos\u00e9 \xf0\x9f\x98\x80" aa4a6f73c3a920f09f9880 \
        "\u00e9\xf0\x9f\x98" a8c3a9c3b0c29fc298 \
        "\u00e9\xf4\x90\x80\x80" aac3a9c3b4c290c280c280 \
        "[format %c 0xd83d]x" a4efbfbd78 \
        "x[format %c 0xde00]" a478efbfbd \
        "\x00a" a20061 \
        "J\xfcrgen" a74ac3bc7267656e \
        "\xc3\xa9\xc3" a6c383c2a9c383 \
        "\xe0\x80\x80" a6c3a0c280c280 \
        "\xed\xa0\x80" a6c3adc2a0c280 \
    ] {
        binary scan [$i eval [list call mp_str $s]] H* hex
        expect "mp_str of [string length $s] characters" $hex $want
    }
}

check "sideband: the reply's strings are decoded from UTF-8, invalid bytes left as they are" {
    reset
    set i [load_rule $sb_rule {}]
    set text "ERR twilio 1: Num\u00e9ro \u7530 [format %c%c 0xd83d 0xde00]"
    set reply [binary format H*a* 940101c0 [binary format H* [str_hex $text]]]
    expect decoded [$i eval [list call utf8_decode [lindex [$i eval [list call mp_reply $reply]] 3]]] $text
    expect invalid [$i eval [list call utf8_decode "a\xff\xc3"]] "a\xff\xc3"
    expect ascii [$i eval [list call utf8_decode "SM0"]] "SM0"
}

foreach {name rule} [list ilx $ilx_rule sideband $sb_rule] {
    check "$name: the rule runs without encoding, which iRules disable" {
        reset
        set i [load_rule $rule {}]
        if { ![catch { $i eval {encoding convertto utf-8 x} }] } { error "encoding is still there" }
    }
}

# ---- caller tokens: both rules' token setting, sent as context.token ----

proc token_not_logged {} {
    foreach line $::logs {
        if { [string first $::env(CALLER_TOKEN) $line] >= 0 } { error "the token was logged: $line" }
    }
}

check "sideband: the token setting reaches the daemon as context.token, for sendOTP and confirmOTP" {
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(TOKENS_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect "without a token" [status] "ERR unauthorized: *"
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(TOKENS_TCP) otp_sb_token "tok-wrong-000000000000000"]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect "a wrong token" [status] "ERR unauthorized: caller token not accepted"
    reset {*}[session_for $PHONE]
    set i [load_rule $sb_rule [list otp_sb_dest $env(TOKENS_TCP) otp_sb_token $env(CALLER_TOKEN)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    set ve [status]
    if { ![regexp $VE_RE $ve] } { error "status {$ve} is not a VE SID" }
    expect_sent token $env(CALLER_TOKEN)
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] $ve
    expect_sent token $env(CALLER_TOKEN)
    token_not_logged
    # Without the token, confirmOTP is refused too.
    set i [load_rule $sb_rule [list otp_sb_dest $env(TOKENS_TCP)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect "confirm without a token" [st_session_get session.custom.twilio.confirm] "ERR unauthorized: *"
}

check "ilx: the token setting reaches the daemon through the forwarder, for sendOTP and confirmOTP" {
    reset {*}[session_for $PHONE]
    set daemon_unix $env(TOKENS_UNIX)
    set i [load_rule $ilx_rule {}]
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect "without a token" [status] "ERR unauthorized: *"
    reset {*}[session_for $PHONE]
    set daemon_unix $env(TOKENS_UNIX)
    set i [load_rule $ilx_rule [list otp_ilx_token $env(CALLER_TOKEN)]]
    fire $i ACCESS_POLICY_AGENT_EVENT
    set ve [status]
    if { ![regexp $VE_RE $ve] } { error "status {$ve} is not a VE SID" }
    expect call [lindex $ilx_calls 0] [list ilx:otp_sidecar_plugin/otp_sidecar_forwarder -timeout 3000 sendOTP $OTP $PHONE +14155550100 $client_addr alice "" "" $env(CALLER_TOKEN)]
    expect_sent token $env(CALLER_TOKEN)
    set agent twilio_confirm
    fire $i ACCESS_POLICY_AGENT_EVENT
    expect confirm [st_session_get session.custom.twilio.confirm] $ve
    expect_sent token $env(CALLER_TOKEN)
    token_not_logged
}

foreach {hosts} [array names ilx_hosts] { catch { close $ilx_hosts($hosts) } }

puts "tclsh: $passed passed, $failed failed"
exit [expr {$failed > 0}]
