# Runs irules/ltm_otp_gate.tcl under tclsh as TMM would, one HTTP request at a time, against
# the real daemon (tests/daemon/gate.rs drives it). Each request gets a fresh child
# interpreter holding only the rule and the stand-ins below, with the Tcl 8.5+ commands
# iRules lack and `encoding` deleted, so using one fails the request.
#
# stdin: one Tcl list per line:
#   set NAME VALUE                       a static:: setting, applied after RULE_INIT
#   request METHOD URI HEADERS BODY      HEADERS: a list of name value ...
# stdout: one line per request, tab-separated: KIND STATUS HEADERS BODY LOGS, the last three
#   base64 (headers as "name<TAB>value" lines, logs one a line). KIND: respond; pass (the
#   rule let the request through to the pool); error (the rule failed: LOGS holds why).
# CRYPTO::sign is HMAC-SHA256 by `openssl dgst`; the sideband commands use real sockets.

set here [file dirname [file normalize [info script]]]
set rule [file join $here .. .. irules ltm_otp_gate.tcl]
set tcl85 {dict lassign lrepeat lreverse apply chan try lmap tailcall coroutine yield zlib}
set settings {}

proc run_request { method uri headers body } {
    global rule tcl85 settings req logs responded collected
    array unset req
    set req(method) $method
    set req(uri) $uri
    set req(body) $body
    set req(headers) $headers
    set logs {}
    set responded ""
    set collected -1
    set i [interp create]
    foreach cmd $tcl85 { catch { $i eval [list rename $cmd {}] } }
    $i eval { rename encoding {} }
    foreach name {when log header cookie path uri_of method host respond collect payload sign
                  b64 uri_decode class_match connect send recv close} {
        $i alias __$name st_$name
    }
    $i eval {
        namespace eval static {}
        namespace eval HTTP {}
        namespace eval CRYPTO {}
        namespace eval URI {}
        proc when { event body } { __when $event $body }
        proc call { name args } { return [uplevel 1 [linsert $args 0 $name]] }
        proc log { facility message } { __log $facility $message }
        proc HTTP::header { op name } { return [__header $name] }
        proc HTTP::cookie { op name } { return [__cookie $name] }
        proc HTTP::path {} { return [__path] }
        proc HTTP::uri {} { return [__uri_of] }
        proc HTTP::method {} { return [__method] }
        proc HTTP::host {} { return [__host] }
        proc HTTP::respond { status args } { __respond $status $args }
        proc HTTP::collect { n } { __collect $n }
        proc HTTP::payload {} { return [__payload] }
        proc CRYPTO::sign { args } { return [__sign [lindex $args 3] [lindex $args 4]] }
        proc b64encode { s } { return [__b64 $s] }
        proc URI::decode { s } { return [__uri_decode $s] }
        proc class { match opt value op name } { return [__class_match $value $name] }
        proc __opts { argvName optsName } {
            upvar 1 $argvName argv $optsName opts
            while { [string match "-*" [lindex $argv 0]] } {
                set opts([lindex $argv 0]) [lindex $argv 1]
                set argv [lrange $argv 2 end]
            }
        }
        proc connect { args } {
            __opts args o
            set r [__connect [lindex $args 0]]
            if { [info exists o(-status)] } { upvar 1 $o(-status) st; set st [lindex $r 0] }
            return [lindex $r 1]
        }
        proc send { args } {
            __opts args o
            set r [__send [lindex $args 0] [lindex $args 1]]
            if { [info exists o(-status)] } { upvar 1 $o(-status) st; set st [lindex $r 0] }
            return [lindex $r 1]
        }
        proc recv { args } {
            __opts args o
            return [__recv [lindex $args 0] [lindex $args 1]]
        }
        proc close { conn } { __close $conn }
    }
    global events
    array unset events
    set f [open $rule]
    set text [read $f]
    ::close $f
    if { [catch {
        $i eval $text
        $i eval $events(RULE_INIT)
        foreach {name value} $settings { $i eval [list set static::$name $value] }
        # An event's `return` ends the event, as in TMM: each runs as a proc's body.
        $i eval [list proc __event {body} {uplevel #0 $body}]
        $i eval [list __event $events(HTTP_REQUEST)]
        if { $responded eq "" && $collected >= 0 } {
            $i eval [list __event $events(HTTP_REQUEST_DATA)]
        }
    } err] } {
        interp delete $i
        return [line error "" "" "" [list $err]]
    }
    interp delete $i
    if { $responded eq "" } {
        return [line pass "" "" "" $logs]
    }
    return [line respond [lindex $responded 0] [lindex $responded 1] [lindex $responded 2] $logs]
}

proc b64 { s } { return [binary encode base64 [encoding convertto utf-8 $s]] }

proc line { kind status headers body logs } {
    set h ""
    foreach {k v} $headers { append h "$k\t$v\n" }
    return "$kind\t$status\t[b64 $h]\t[b64 $body]\t[b64 [join $logs \n]]"
}

proc st_when { event body } { set ::events($event) $body }
proc st_log { facility message } { lappend ::logs "$facility $message" }
proc st_header { name } {
    foreach {k v} $::req(headers) {
        if { [string tolower $k] eq [string tolower $name] } { return $v }
    }
    if { [string tolower $name] eq "content-length" && $::req(body) ne "" } {
        return [string length $::req(body)]
    }
    return ""
}
proc st_cookie { name } {
    foreach part [split [st_header Cookie] ";"] {
        set part [string trim $part]
        set eq [string first = $part]
        if { $eq > 0 && [string range $part 0 [expr {$eq - 1}]] eq $name } {
            return [string range $part [expr {$eq + 1}] end]
        }
    }
    return ""
}
proc st_path {} { return [lindex [split $::req(uri) ?] 0] }
proc st_uri_of {} { return $::req(uri) }
proc st_method {} { return $::req(method) }
proc st_host {} { return [st_header Host] }
proc st_respond { status rest } {
    if { $::responded ne "" } { error "HTTP::respond called twice" }
    if { [lindex $rest 0] eq "content" } {
        set body [lindex $rest 1]
        set headers [lrange $rest 2 end]
    } else {
        set body ""
        set headers $rest
    }
    set ::responded [list $status $headers $body]
}
proc st_collect { n } { set ::collected $n }
proc st_payload {} { return [string range $::req(body) 0 [expr {$::collected - 1}]] }
proc st_sign { key data } {
    set hex [lindex [exec openssl dgst -sha256 -hmac $key -r << $data] 0]
    return [binary format H* $hex]
}
proc st_b64 { s } { return [binary encode base64 $s] }
proc st_uri_decode { s } {
    set out ""
    while { [regexp {^([^%]*)%([0-9A-Fa-f]{2})(.*)$} $s -> head hex s] } {
        append out $head [format %c 0x$hex]
    }
    return "$out$s"
}
proc st_class_match { value name } {
    foreach {k v} [set ::classes($name)] {
        if { $k eq $value } { return $v }
    }
    return ""
}
proc st_connect { dest } {
    set colon [string last : $dest]
    if { [catch { socket [string range $dest 0 [expr {$colon - 1}]] [string range $dest [expr {$colon + 1}] end] } chan] } {
        return [list failed ""]
    }
    fconfigure $chan -translation binary -blocking 1
    return [list connected $chan]
}
proc st_send { chan data } {
    puts -nonewline $chan $data
    flush $chan
    return [list sent [string length $data]]
}
proc st_recv { n chan } { return [read $chan $n] }
proc st_close { chan } { catch { ::close $chan } }

set classes(users) {alice +31612345678}
fconfigure stdout -translation lf
while { [gets stdin line] >= 0 } {
    switch -- [lindex $line 0] {
        set { lappend settings [lindex $line 1] [lindex $line 2] }
        request {
            puts [run_request [lindex $line 1] [lindex $line 2] [lindex $line 3] [lindex $line 4]]
        }
        default { puts [line error "" "" "" [list "unknown command"]] }
    }
    flush stdout
}
