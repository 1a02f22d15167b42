# otp-sidecar: a second factor in front of any virtual server, with LTM only (no APM).
# The daemon draws, sends and checks the code (issueOTP / checkOTP) over a sideband TCP
# connection; this rule serves the code-entry page and, once the code is right, a signed,
# expiring session cookie. Requests without a valid cookie get the page.
#
# Attach to the HTTP virtual server to protect (an HTTP profile; a client SSL profile: the
# cookie is Secure). See docs/ltm-gate.md for the install, the settings and how the phone is
# found. Tcl 8.4 only (iRules): no dict, {*}, lassign, apply, chan, try, encoding.

when RULE_INIT {
    # ---- settings ----
    # The daemon's TCP listener: a virtual server name or ADDRESS:PORT.
    set static::gate_dest       "/Common/otp_sidecar_vs"
    # E.164 number, alphanumeric sender ID, or Messaging Service SID (MG...).
    set static::gate_sender     "+14155550100"
    # Where the phone comes from. A string data group mapping the user name to an E.164
    # number (the user name from gate_user_header, which something you trust must set, e.g.
    # an upstream SSO or a client-certificate rule); "" to use gate_phone_header instead.
    set static::gate_phone_class ""
    set static::gate_user_header "X-Remote-User"
    # Or a header holding the number itself: only when a trusted hop sets it (this rule
    # cannot tell it from one the client made up).
    set static::gate_phone_header "X-User-Mobile"
    # The secret the cookie is signed with (HMAC-SHA256): at least 32 random characters,
    # e.g. `openssl rand -hex 32`. Changing it signs everybody out.
    set static::gate_secret     "change-me-to-a-long-random-secret"
    set static::gate_cookie     "otp_gate"
    # How long a session lasts after the code, in seconds.
    set static::gate_session_secs 28800
    # The path the page posts to (never forwarded to the pool).
    set static::gate_path       "/.otp-gate"
    # Whole exchange with the daemon, connect to reply; its own deadline is 2500 ms.
    set static::gate_timeout_ms 3000
    # The caller token the daemon's caller_tokens_file gives this BIG-IP ("" sends none).
    set static::gate_token      ""
}

# ---- the phone in a log line or on the page: its last 4 digits only ----
proc gate_mask { phone } {
    if { ![regexp {^\+[0-9]{7,15}$} $phone] } {
        return "****"
    }
    return "+[string repeat * [expr {[string length $phone] - 5}]][string range $phone end-3 end]"
}

# ---- MessagePack, the subset this rule needs (every string it sends is ASCII) ----
proc gate_mp_str { s } {
    regsub -all {[^\x20-\x7e]} $s "" s
    set n [string length $s]
    if { $n < 32 } {
        return [binary format ca* [expr {0xa0 | $n}] $s]
    }
    return [binary format cca* 0xd9 [expr {$n & 0xff}] [string range $s 0 254]]
}

# [0, msgid, method, [a, b, {token}?]]
proc gate_mp_request { msgid method a b } {
    set params "[call gate_mp_str $a][call gate_mp_str $b]"
    if { $static::gate_token ne "" } {
        set head [binary format c 0x93]
        append params "[binary format c 0x81][call gate_mp_str token][call gate_mp_str $static::gate_token]"
    } else {
        set head [binary format c 0x92]
    }
    return "[binary format ccc 0x94 0 0xce][binary format I $msgid][call gate_mp_str $method]$head$params"
}

# The item at pos: {nil "" next} {int v next} {str v next} {array n next} {more n} {bad why}
proc gate_mp_item { buf pos } {
    set len [string length $buf]
    if { $pos >= $len } { return [list more 1] }
    binary scan $buf @${pos}c b
    set b [expr {$b & 0xff}]
    set p [expr {$pos + 1}]
    if { $b <= 0x7f } { return [list int $b $p] }
    if { $b >= 0x90 && $b <= 0x9f } { return [list array [expr {$b & 0x0f}] $p] }
    if { $b == 0xc0 } { return [list nil "" $p] }
    if { $b >= 0xa0 && $b <= 0xbf } {
        set n [expr {$b & 0x1f}]
    } else {
        switch -- $b {
            204 - 217 { set k 1 }
            205 - 218 { set k 2 }
            206 - 219 { set k 4 }
            default { return [list bad [format "byte 0x%02x" $b]] }
        }
        if { $len < $p + $k } { return [list more [expr {$p + $k - $len}]] }
        switch -- $k {
            1 { binary scan $buf @${p}c v; set v [expr {$v & 0xff}] }
            2 { binary scan $buf @${p}S v; set v [expr {$v & 0xffff}] }
            default { binary scan $buf @${p}I v; set v [expr {$v & 0xffffffff}] }
        }
        set p [expr {$p + $k}]
        if { $b == 204 || $b == 205 || $b == 206 } { return [list int $v $p] }
        set n $v
    }
    if { $n > 4096 } { return [list bad "string of $n bytes"] }
    if { $len < $p + $n } { return [list more [expr {$p + $n - $len}]] }
    return [list str [string range $buf $p [expr {$p + $n - 1}]] [expr {$p + $n}]]
}

# The reply [1, msgid, error, result]: {done msgid error result}, {more n} or {bad why}.
proc gate_mp_reply { buf } {
    set pos 0
    set values {}
    foreach slot {header type msgid error result} {
        set item [call gate_mp_item $buf $pos]
        set kind [lindex $item 0]
        if { $kind eq "more" || $kind eq "bad" } { return $item }
        switch -- $slot {
            header { set ok [expr {$kind eq "array" && [lindex $item 1] == 4}] }
            type { set ok [expr {$kind eq "int" && [lindex $item 1] == 1}] }
            msgid { set ok [expr {$kind eq "int"}] }
            default { set ok [expr {$kind eq "nil" || $kind eq "str"}] }
        }
        if { !$ok } { return [list bad "unexpected $kind in the $slot"] }
        lappend values [lindex $item 1]
        set pos [lindex $item 2]
    }
    return [list done [lindex $values 2] [lindex $values 3] [lindex $values 4]]
}

# One call: the result ("SM...", "OK") or an "ERR ..." string; never raises.
proc gate_call { method a b } {
    set timeout $static::gate_timeout_ms
    set deadline [expr {[clock clicks -milliseconds] + $timeout}]
    set msgid [expr {int(rand() * 2147483646) + 1}]
    set cstat ""
    set conn ""
    if { [catch { set conn [connect -timeout $timeout -idle 30 -status cstat $static::gate_dest] }] \
         || $conn eq "" } {
        return "ERR unavailable: cannot connect to otp-sidecar"
    }
    set status ""
    if { [catch {
        set sstat ""
        send -timeout $timeout -status sstat $conn [call gate_mp_request $msgid $method $a $b]
        if { $sstat ne "sent" } { set status "ERR unavailable: cannot send to otp-sidecar" }
        set buf ""
        while { $status eq "" } {
            set reply [call gate_mp_reply $buf]
            set kind [lindex $reply 0]
            if { $kind eq "done" } {
                if { [lindex $reply 1] != $msgid } {
                    set status "ERR unavailable: reply to another request"
                } elseif { [lindex $reply 2] ne "" } {
                    set status [lindex $reply 2]
                } else {
                    set status [lindex $reply 3]
                }
                break
            }
            if { $kind eq "bad" } {
                set status "ERR unavailable: bad reply from otp-sidecar"
                break
            }
            set left [expr {$deadline - [clock clicks -milliseconds]}]
            if { $left <= 0 } {
                set status "ERR timeout: no reply from otp-sidecar"
                break
            }
            set chunk [recv -timeout $left [lindex $reply 1] $conn]
            if { $chunk eq "" } {
                set status "ERR unavailable: otp-sidecar closed the connection"
                break
            }
            append buf $chunk
        }
    }] } {
        set status "ERR unavailable: sideband failed"
    }
    catch { close $conn }
    return $status
}

# ---- the session cookie: EXPIRY.SIGNATURE, signed over the expiry and the phone ----
proc gate_sign { expiry phone } {
    set mac [CRYPTO::sign -alg hmac-sha256 -key $static::gate_secret "v1|$expiry|$phone"]
    return [string map {+ - / _ = ""} [b64encode $mac]]
}

# Equal strings, compared without stopping at the first difference.
proc gate_same { a b } {
    if { [string length $a] != [string length $b] } { return 0 }
    set diff 0
    set n [string length $a]
    for { set i 0 } { $i < $n } { incr i } {
        scan [string index $a $i] %c x
        scan [string index $b $i] %c y
        set diff [expr {$diff | ($x ^ $y)}]
    }
    return [expr {$diff == 0}]
}

proc gate_cookie_valid { value phone } {
    if { ![regexp {^([0-9]{1,12})\.([A-Za-z0-9_-]{43})$} $value -> expiry sig] } { return 0 }
    if { $expiry <= [clock seconds] } { return 0 }
    return [call gate_same $sig [call gate_sign $expiry $phone]]
}

# ---- the page ----
proc gate_html { s } {
    return [string map {& &amp; < &lt; > &gt; \" &quot; ' &#39;} $s]
}

# What the user reads for each reply: never the daemon's own words.
proc gate_message { reply } {
    switch -glob -- $reply {
        "SM*" - "CA*" { return "A code is on its way. Enter it below." }
        "ERR invalid_code:*" { return "That code is not right. Check it and try again." }
        "ERR expired:*" { return "That code has expired. Send a new one." }
        "ERR locked:*" { return "Too many wrong codes. Wait a few minutes, then send a new code." }
        "ERR rate_limited:*" { return "Too many codes asked for. Wait a little, then try again." }
        "ERR bad_request:*" - "ERR invalid_phone:*" - "ERR blocked:*" {
            return "No code can be sent to the number on file. Contact your help desk."
        }
        default { return "The code service is unavailable. Try again in a minute." }
    }
}

proc gate_page { masked message back } {
    set error ""
    if { $message ne "" } {
        set error "<p id=\"message\" role=\"alert\">[call gate_html $message]</p>"
    }
    set back [call gate_html $back]
    set path [call gate_html $static::gate_path]
    return "<!DOCTYPE html>
<html lang=\"en\"><head><meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>Enter your code</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:26em;margin:3em auto;padding:0 1em;color:#1a1a1a}
label{display:block;font-weight:600;margin-top:1em}input{font:inherit;padding:.4em;width:100%;box-sizing:border-box;letter-spacing:.2em}
button{font:inherit;padding:.5em 1em;margin-top:1em}#message{padding:.6em;border-left:4px solid #b00020;background:#fdecea}
:focus{outline:3px solid #1565c0;outline-offset:2px}</style></head>
<body><main><h1>Enter your code</h1>
<p>We text a code to <strong>[call gate_html $masked]</strong>.</p>
$error
<form method=\"post\" action=\"$path\">
<input type=\"hidden\" name=\"back\" value=\"$back\">
<button type=\"submit\" name=\"action\" value=\"send\" id=\"send\">Send me a code</button>
</form>
<form method=\"post\" action=\"$path\">
<input type=\"hidden\" name=\"back\" value=\"$back\">
<label for=\"code\">Code</label>
<input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required maxlength=\"10\" aria-describedby=\"hint\">
<p id=\"hint\">The code in the text message, valid for a few minutes.</p>
<button type=\"submit\" name=\"action\" value=\"check\" id=\"check\">Continue</button>
</form></main></body></html>"
}

proc gate_respond_page { status masked message back } {
    HTTP::respond $status content [call gate_page $masked $message $back] \
        "Content-Type" "text/html; charset=utf-8" "Cache-Control" "no-store" \
        "X-Frame-Options" "DENY" "Content-Security-Policy" "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
}

# The phone for this request, or "".
proc gate_phone {} {
    if { $static::gate_phone_class ne "" } {
        set user [HTTP::header value $static::gate_user_header]
        if { $user eq "" } { return "" }
        set phone [class match -value $user equals $static::gate_phone_class]
    } else {
        set phone [HTTP::header value $static::gate_phone_header]
    }
    set phone [string map {" " "" "-" "" "(" "" ")" "" "." ""} $phone]
    if { ![regexp {^\+[1-9][0-9]{6,14}$} $phone] } { return "" }
    return $phone
}

# A form field of body (application/x-www-form-urlencoded), decoded.
proc gate_field { body name } {
    foreach pair [split $body &] {
        set eq [string first = $pair]
        if { $eq > 0 && [string range $pair 0 [expr {$eq - 1}]] eq $name } {
            return [URI::decode [string map {+ " "} [string range $pair [expr {$eq + 1}] end]]]
        }
    }
    return ""
}

# Where to go after the code: a path on this site only.
proc gate_back { back } {
    if { ![regexp {^/[^/\\]} $back] && $back ne "/" } { return "/" }
    if { [regexp {[\x00-\x20\x7f]} $back] } { return "/" }
    return $back
}

when HTTP_REQUEST {
    set gate_phone [call gate_phone]
    if { $gate_phone eq "" } {
        log local0.warn "otp-gate: no phone number for this request; refused"
        HTTP::respond 403 content "No phone number is on file for you. Contact your help desk.\n" \
            "Content-Type" "text/plain; charset=utf-8" "Cache-Control" "no-store"
        return
    }
    set gate_masked [call gate_mask $gate_phone]
    set cookie [HTTP::cookie value $static::gate_cookie]
    if { [HTTP::path] ne $static::gate_path } {
        if { $cookie ne "" && [call gate_cookie_valid $cookie $gate_phone] } {
            # Signed in: on to the pool.
            return
        }
        call gate_respond_page 200 $gate_masked "" [call gate_back [HTTP::uri]]
        return
    }
    if { [HTTP::method] ne "POST" } {
        call gate_respond_page 200 $gate_masked "" "/"
        return
    }
    # A form from another site is refused (the session cookie is SameSite=Strict; this is
    # for the form itself, which would otherwise send texts on a stranger's behalf).
    set origin [HTTP::header value Origin]
    if { $origin ne "" && $origin ne "https://[HTTP::host]" && $origin ne "http://[HTTP::host]" } {
        HTTP::respond 403 content "Forbidden\n" "Content-Type" "text/plain"
        return
    }
    set length [HTTP::header value Content-Length]
    if { ![string is integer -strict $length] || $length <= 0 || $length > 2048 } {
        call gate_respond_page 400 $gate_masked "Please use the form." "/"
        return
    }
    HTTP::collect $length
}

when HTTP_REQUEST_DATA {
    set body [HTTP::payload]
    set back [call gate_back [call gate_field $body back]]
    set action [call gate_field $body action]
    if { $action eq "send" } {
        set reply [call gate_call issueOTP $gate_phone $static::gate_sender]
        log local0.info "otp-gate: phone $gate_masked: code asked for: [lindex [split $reply :] 0]"
        call gate_respond_page 200 $gate_masked [call gate_message $reply] $back
        return
    }
    set code [call gate_field $body code]
    regsub -all {[^0-9A-Za-z]} $code "" code
    if { $code eq "" } {
        call gate_respond_page 200 $gate_masked "Enter the code from the text message." $back
        return
    }
    set reply [call gate_call checkOTP $gate_phone $code]
    unset code
    if { $reply eq "OK" } {
        set expiry [expr {[clock seconds] + $static::gate_session_secs}]
        set value "$expiry.[call gate_sign $expiry $gate_phone]"
        log local0.info "otp-gate: phone $gate_masked: signed in"
        HTTP::respond 303 Location $back "Cache-Control" "no-store" "Set-Cookie" \
            "$static::gate_cookie=$value; Path=/; Max-Age=$static::gate_session_secs; Secure; HttpOnly; SameSite=Strict"
        return
    }
    log local0.warn "otp-gate: phone $gate_masked: code refused: [lindex [split $reply :] 0]"
    call gate_respond_page 200 $gate_masked [call gate_message $reply] $back
}
