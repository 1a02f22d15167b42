# otp-sidecar: text the APM one-time password through Twilio over a sideband TCP connection.
# No ILX module: this rule speaks MessagePack-RPC to the daemon's TCP listener itself.
#
# Attach to the APM virtual server. In the access policy, after "OTP Generate", add an
# "iRule Event" agent whose ID is the agent id below, then branch on:
#     expr { [mcget {session.custom.twilio.status}] starts_with "SM" }
# The status holds the Twilio message SID on success, or an "ERR <reason>: ..." string.
# When the daemon may place voice calls (channel "voice", or voice_fallback), a call's SID
# starts with "CA": branch on
#     expr { [mcget {session.custom.twilio.status}] starts_with "SM" ||
#            [mcget {session.custom.twilio.status}] starts_with "CA" }
#
# Verify mode (the daemon runs with verify_service_sid): the status holds the verification
# SID, so branch on  expr { [mcget {session.custom.twilio.status}] starts_with "VE" }
# and add a second "iRule Event" agent, with the confirm agent id below, on the success
# branch of "OTP Verify": it tells Twilio the user entered the right code (Fraud Guard learns
# from it) and stores the daemon's reply in session.custom.twilio.confirm. That reply never
# changes the policy's outcome: the user has already passed.
#
# Tcl 8.4 only (iRules): no dict, {*}, lassign, lrepeat, lreverse, apply, chan, try,
# binary encode/decode.

when RULE_INIT {
    # ---- settings ----
    set static::otp_sb_agent_id   "twilio"
    # The daemon's TCP listener: a virtual server name (see the README) or ADDRESS:PORT.
    set static::otp_sb_dest       "/Common/otp_sidecar_vs"
    # The session variable that holds the user's mobile number (E.164).
    set static::otp_sb_phone_var  "session.ad.last.attr.mobile"
    # E.164 number, alphanumeric sender ID, or Messaging Service SID (MG...).
    set static::otp_sb_sender     "+14155550100"
    # Whole exchange, connect to reply; the daemon's own deadline is 2500 ms.
    set static::otp_sb_timeout_ms 3000
    # The session variable with the user's language, passed on as the context's locale
    # ("" leaves it out). Check the name on your version.
    set static::otp_sb_locale_var "session.ui.lang"
    # A session variable holding "sms" or "voice" (say, from a logon page choice), passed on
    # as the context's channel ("" leaves it out: the daemon's configured channel).
    set static::otp_sb_channel_var ""
    # Verify mode only: the agent id after a successful "OTP Verify" ("" for none).
    set static::otp_sb_confirm_agent_id "twilio_confirm"
    # The caller token the daemon's caller_tokens_file gives this BIG-IP, sent as the
    # context's token with every sendOTP and confirmOTP ("" sends none). A secret: never
    # logged by this rule. For a daemon off the box, point otp_sb_dest at an internal virtual
    # server whose server-side SSL profile speaks TLS (with a client certificate) to the
    # daemons' pool: this rule speaks plain to that virtual, BIG-IP does the TLS (see the
    # README's Off-box section).
    set static::otp_sb_token ""
}

# ---- the phone in a log line ----
# The daemon's masking rule (src/mask/mod.rs, README "Logs"): the calling code, a star for
# each hidden digit of the national number, then its last min(4, floor(N/2)) digits (N: the
# national number's digit count): +14155550100 -> +1******0100, +12345678 -> +1****678. The
# calling code's length follows the ITU's E.164 assignments: 1 and 7 have one digit, the codes
# listed below two, every other code three. A number as a directory writes it loses its
# separators first; one without a leading + shows no calling code; anything else is "****".
proc otp_mask { phone } {
    set phone [string trim $phone]
    if { ![regexp {^\+?[0-9 ()./-]+$} $phone] } {
        return "****"
    }
    regsub -all {[^0-9]} $phone "" digits
    set len [string length $digits]
    if { $len == 0 } {
        return "****"
    }
    set code 0
    if { [string index $phone 0] eq "+" } {
        set two " 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 "
        set first [string index $digits 0]
        if { $first eq "1" || $first eq "7" } {
            set code 1
        } elseif { [string first " [string range $digits 0 1] " $two] >= 0 } {
            set code 2
        } else {
            set code 3
        }
        if { $code > $len } {
            set code $len
        }
    }
    set national [expr {$len - $code}]
    set shown [expr {$national / 2}]
    if { $shown > 4 } {
        set shown 4
    }
    set masked ""
    if { $code > 0 } {
        set masked "+[string range $digits 0 [expr {$code - 1}]]"
    }
    append masked [string repeat "*" [expr {$national - $shown}]]
    append masked [string range $digits [expr {$len - $shown}] end]
    return $masked
}

# ---- UTF-8, by hand: iRules disable `encoding` ----
# Tcl 8.4 strings are characters (UCS-2). The daemon wants UTF-8 bytes, and `binary format a*`
# keeps only each character's low 8 bits, so the rule encodes each string itself. TMM may also
# hand over a value that already holds UTF-8 bytes, one per character (an e-acute as the
# characters \xc3\xa9): a string whose characters are all below 0x100 and form valid UTF-8 is
# taken as such and sent as it is, never encoded twice. (A real Latin-1 name that happens to
# spell valid UTF-8 would be taken for bytes too; none is known to occur.) Characters above
# U+FFFF do not fit Tcl 8.4's UCS-2 strings: one arrives either as a surrogate pair, which
# becomes that character's 4 bytes, or as its 4 UTF-8 bytes, one per character (how Tcl 8.4
# reads UTF-8 it cannot hold), which are sent as they are, also beside other non-ASCII
# characters. A lone surrogate, which no UTF-8 can carry, becomes U+FFFD.

# Whether every character of s is below 0x100 and the whole forms valid UTF-8 (the same rules
# as the daemon's: no overlong forms, no surrogates, nothing above U+10FFFF).
proc utf8_bytes_valid { s } {
    return [regexp {^(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf][\x80-\xbf]|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf][\x80-\xbf]|[\xf1-\xf3][\x80-\xbf][\x80-\xbf][\x80-\xbf]|\xf4[\x80-\x8f][\x80-\xbf][\x80-\xbf])*$} $s]
}

# The UTF-8 bytes of s, one character each (below 0x100), ready for `binary format a*`.
proc utf8_encode { s } {
    # Pure ASCII, the common case, is its own UTF-8.
    if { ![regexp {[^\x00-\x7f]} $s] } {
        return $s
    }
    if { [call utf8_bytes_valid $s] } {
        return $s
    }
    set bytes {}
    set high 0
    set n [string length $s]
    for { set k 0 } { $k < $n } { incr k } {
        scan [string index $s $k] %c cp
        if { $high } {
            if { $cp >= 0xdc00 && $cp <= 0xdfff } {
                set cp [expr {0x10000 + (($high - 0xd800) << 10) + ($cp - 0xdc00)}]
                set high 0
                lappend bytes [expr {0xf0 | ($cp >> 18)}] [expr {0x80 | (($cp >> 12) & 0x3f)}] \
                    [expr {0x80 | (($cp >> 6) & 0x3f)}] [expr {0x80 | ($cp & 0x3f)}]
                continue
            }
            lappend bytes 0xef 0xbf 0xbd
            set high 0
        }
        if { $cp < 0x80 } {
            lappend bytes $cp
        } elseif { $cp >= 0xf0 && $cp <= 0xf4 && \
                   [call utf8_bytes_valid [string range $s $k [expr {$k + 3}]]] } {
            # Tcl 8.4 cannot hold a character above U+FFFF: it keeps such a character's 4
            # UTF-8 bytes as 4 characters below 0x100, which are sent as they are.
            binary scan [string range $s $k [expr {$k + 3}]] c* more
            foreach byte $more {
                lappend bytes [expr {$byte & 0xff}]
            }
            incr k 3
        } elseif { $cp < 0x800 } {
            lappend bytes [expr {0xc0 | ($cp >> 6)}] [expr {0x80 | ($cp & 0x3f)}]
        } elseif { $cp >= 0xd800 && $cp <= 0xdbff } {
            set high $cp
        } elseif { $cp >= 0xdc00 && $cp <= 0xdfff } {
            lappend bytes 0xef 0xbf 0xbd
        } elseif { $cp < 0x10000 } {
            lappend bytes [expr {0xe0 | ($cp >> 12)}] [expr {0x80 | (($cp >> 6) & 0x3f)}] \
                [expr {0x80 | ($cp & 0x3f)}]
        } else {
            # Only where a Tcl build holds characters above U+FFFF whole.
            lappend bytes [expr {0xf0 | ($cp >> 18)}] [expr {0x80 | (($cp >> 12) & 0x3f)}] \
                [expr {0x80 | (($cp >> 6) & 0x3f)}] [expr {0x80 | ($cp & 0x3f)}]
        }
    }
    if { $high } {
        lappend bytes 0xef 0xbf 0xbd
    }
    return [binary format c* $bytes]
}

# The characters of the UTF-8 bytes b (a reply's string); b as it is when it is not valid
# UTF-8. A 4-byte sequence becomes a surrogate pair, as a UCS-2 string holds it.
proc utf8_decode { b } {
    if { ![regexp {[^\x00-\x7f]} $b] || ![call utf8_bytes_valid $b] } {
        return $b
    }
    binary scan $b c* bytes
    set s ""
    set cp 0
    set left 0
    foreach byte $bytes {
        set byte [expr {$byte & 0xff}]
        if { $left > 0 } {
            set cp [expr {($cp << 6) | ($byte & 0x3f)}]
            incr left -1
        } elseif { $byte < 0x80 } {
            set cp $byte
        } elseif { $byte < 0xe0 } {
            set cp [expr {$byte & 0x1f}]
            set left 1
        } elseif { $byte < 0xf0 } {
            set cp [expr {$byte & 0x0f}]
            set left 2
        } else {
            set cp [expr {$byte & 0x07}]
            set left 3
        }
        if { $left == 0 } {
            if { $cp < 0x10000 } {
                append s [format %c $cp]
            } else {
                set cp [expr {$cp - 0x10000}]
                append s [format %c%c [expr {0xd800 | ($cp >> 10)}] [expr {0xdc00 | ($cp & 0x3ff)}]]
            }
        }
    }
    return $s
}

# ---- MessagePack, the subset MessagePack-RPC needs ----

# A string as fixstr, str8, str16 or str32 of its UTF-8 bytes (the header counts bytes).
proc mp_str { s } {
    set b [call utf8_encode $s]
    set n [string length $b]
    if { $n < 32 } {
        return [binary format ca* [expr {0xa0 | $n}] $b]
    }
    if { $n < 256 } {
        return [binary format cca* 0xd9 $n $b]
    }
    if { $n < 65536 } {
        return [binary format cSa* 0xda $n $b]
    }
    return [binary format cIa* 0xdb $n $b]
}

# A non-negative integer as positive fixint, uint8, uint16 or uint32.
proc mp_uint { n } {
    if { $n < 128 } {
        return [binary format c $n]
    }
    if { $n < 256 } {
        return [binary format cc 0xcc $n]
    }
    if { $n < 65536 } {
        return [binary format cS 0xcd $n]
    }
    return [binary format cI 0xce $n]
}

# sendOTP's params [otp, phone, sender, {ip, user, locale, channel, token}]: the context map
# holds only the values that are not empty, and is left out when none is.
proc mp_send_params { otp phone sender ip user locale channel token } {
    set context ""
    set n 0
    foreach {key value} [list ip $ip user $user locale $locale channel $channel token $token] {
        if { $value ne "" } {
            append context "[call mp_str $key][call mp_str $value]"
            incr n
        }
    }
    set args "[call mp_str $otp][call mp_str $phone][call mp_str $sender]"
    if { $n > 0 } {
        return "[binary format c 0x94]$args[binary format c [expr {0x80 | $n}]]$context"
    }
    return "[binary format c 0x93]$args"
}

# The request [0, msgid, method, params], params already encoded.
proc mp_request { msgid method params } {
    return "[binary format cc 0x94 0][call mp_uint $msgid][call mp_str $method]$params"
}

# The item at byte offset pos of buf:
#   {nil "" next} {int value next} {str value next} {array count next}
#   {more n}: n more bytes are needed (never more than the item itself holds)
#   {bad why}
proc mp_item { buf pos } {
    set len [string length $buf]
    if { $pos >= $len } {
        return [list more 1]
    }
    binary scan $buf @${pos}c b
    set b [expr {$b & 0xff}]
    set p [expr {$pos + 1}]
    if { $b <= 0x7f } {
        return [list int $b $p]
    }
    if { $b >= 0xe0 } {
        return [list int [expr {$b - 256}] $p]
    }
    if { $b >= 0x90 && $b <= 0x9f } {
        return [list array [expr {$b & 0x0f}] $p]
    }
    if { $b == 0xc0 } {
        return [list nil "" $p]
    }
    set n -1
    if { $b >= 0xa0 && $b <= 0xbf } {
        set n [expr {$b & 0x1f}]
    } else {
        # uint8/16/32, str8/16/32, bin8/16/32: a size field of 1, 2 or 4 bytes.
        switch -- $b {
            204 - 217 - 196 { set k 1 }
            205 - 218 - 197 { set k 2 }
            206 - 219 - 198 { set k 4 }
            default { return [list bad [format "unexpected byte 0x%02x" $b]] }
        }
        if { $len < $p + $k } {
            return [list more [expr {$p + $k - $len}]]
        }
        if { $k == 1 } {
            binary scan $buf @${p}c v
            set v [expr {$v & 0xff}]
        } elseif { $k == 2 } {
            binary scan $buf @${p}S v
            set v [expr {$v & 0xffff}]
        } else {
            binary scan $buf @${p}I v
            set v [expr {$v & 0xffffffff}]
        }
        set p [expr {$p + $k}]
        if { $b == 204 || $b == 205 || $b == 206 } {
            return [list int $v $p]
        }
        set n $v
    }
    if { $n > 65536 } {
        return [list bad "string of $n bytes"]
    }
    if { $len < $p + $n } {
        return [list more [expr {$p + $n - $len}]]
    }
    return [list str [string range $buf $p [expr {$p + $n - 1}]] [expr {$p + $n}]]
}

# The response [1, msgid, error, result] at the front of buf:
#   {done msgid error result} (error or result is "" when nil), {more n} or {bad why}.
proc mp_reply { buf } {
    set pos 0
    set values {}
    foreach slot {header type msgid error result} {
        set item [call mp_item $buf $pos]
        set kind [lindex $item 0]
        if { $kind eq "more" || $kind eq "bad" } {
            return $item
        }
        switch -- $slot {
            header { set ok [expr {$kind eq "array" && [lindex $item 1] == 4}] }
            type { set ok [expr {$kind eq "int" && [lindex $item 1] == 1}] }
            msgid { set ok [expr {$kind eq "int"}] }
            default { set ok [expr {$kind eq "nil" || $kind eq "str"}] }
        }
        if { !$ok } {
            return [list bad "unexpected $kind in the $slot"]
        }
        lappend values [lindex $item 1]
        set pos [lindex $item 2]
    }
    return [list done [lindex $values 2] [lindex $values 3] [lindex $values 4]]
}

# ---- the exchange ----

# Makes one call (params encoded) and returns the SID or an "ERR ..." string; never raises.
proc otp_sideband_call { method params } {
    set timeout $static::otp_sb_timeout_ms
    set deadline [expr {[clock clicks -milliseconds] + $timeout}]
    set msgid [expr {int(rand() * 2147483646) + 1}]
    set cstat ""
    set conn ""
    if { [catch {
        set conn [connect -timeout $timeout -idle 30 -status cstat $static::otp_sb_dest]
    } err] } {
        return "ERR unavailable: cannot connect to otp-sidecar: $err"
    }
    if { $conn eq "" } {
        return "ERR unavailable: cannot connect to otp-sidecar ($cstat)"
    }
    set status ""
    if { [catch {
        set sstat ""
        send -timeout $timeout -status sstat $conn [call mp_request $msgid $method $params]
        if { $sstat ne "sent" } {
            set status "ERR unavailable: cannot send to otp-sidecar ($sstat)"
        }
        set buf ""
        while { $status eq "" } {
            set reply [call mp_reply $buf]
            set kind [lindex $reply 0]
            if { $kind eq "done" } {
                if { [lindex $reply 1] != $msgid } {
                    set status "ERR unavailable: reply to another request"
                } elseif { [lindex $reply 2] ne "" } {
                    # An ERR text may carry Twilio's words, and those may not be ASCII.
                    set status [call utf8_decode [lindex $reply 2]]
                } else {
                    set status [call utf8_decode [lindex $reply 3]]
                }
                break
            }
            if { $kind eq "bad" } {
                set status "ERR unavailable: bad reply from otp-sidecar: [lindex $reply 1]"
                break
            }
            set left [expr {$deadline - [clock clicks -milliseconds]}]
            if { $left <= 0 } {
                set status "ERR timeout: no reply from otp-sidecar within $timeout ms"
                break
            }
            # Ask only for bytes the reply is known to hold: recv may wait for all of them.
            set rstat ""
            set chunk [recv -timeout $left -status rstat [lindex $reply 1] $conn]
            if { $chunk eq "" } {
                if { [clock clicks -milliseconds] >= $deadline } {
                    set status "ERR timeout: no reply from otp-sidecar within $timeout ms"
                } else {
                    set status "ERR unavailable: otp-sidecar closed the connection ($rstat)"
                }
                break
            }
            append buf $chunk
        }
    } err] } {
        set status "ERR unavailable: sideband failed: $err"
    }
    catch { close $conn }
    return $status
}

when ACCESS_POLICY_AGENT_EVENT {
    set agent [ACCESS::policy agent_id]
    if { $agent ne "" && $agent eq $static::otp_sb_confirm_agent_id } {
        # In every mode: the VE... SID sendOTP stored names the verification; otherwise
        # (Messages mode: an SM... status) the phone does, and the daemon answers its SM... SID.
        set target [ACCESS::session data get "session.custom.twilio.status"]
        if { ![regexp {^VE[0-9a-fA-F]{32}$} $target] } {
            set target [ACCESS::session data get $static::otp_sb_phone_var]
        }
        # confirmOTP [target] or, with a token, [target, {token}].
        if { $static::otp_sb_token ne "" } {
            set params "[binary format c 0x92][call mp_str $target][binary format c 0x81]"
            append params "[call mp_str token][call mp_str $static::otp_sb_token]"
        } else {
            set params "[binary format c 0x91][call mp_str $target]"
        }
        set reply [call otp_sideband_call confirmOTP $params]
        ACCESS::session data set "session.custom.twilio.confirm" $reply
        if { [regexp {^(VE|SM|CA)[0-9a-fA-F]{32}$} $reply] } {
            log local0.info "otp-sidecar: confirmed $reply"
        } else {
            log local0.warn "otp-sidecar: confirm failed: $reply"
        }
        return
    }
    if { $agent ne $static::otp_sb_agent_id } {
        return
    }
    set otp [ACCESS::session data get "session.otp.assigned.val"]
    set user [ACCESS::session data get "session.logon.last.username"]
    set phone [ACCESS::session data get $static::otp_sb_phone_var]
    set sender $static::otp_sb_sender

    # Never log the OTP; log the phone masked.
    set masked [call otp_mask $phone]

    set missing ""
    if { $otp eq "" } {
        set missing "OTP (session.otp.assigned.val)"
    } elseif { $phone eq "" } {
        set missing "phone number ($static::otp_sb_phone_var)"
    } elseif { $sender eq "" } {
        set missing "sender (static::otp_sb_sender)"
    }
    if { $missing ne "" } {
        log local0.warn "otp-sidecar: user '$user': no $missing; OTP not sent"
        ACCESS::session data set "session.custom.twilio.status" "ERR bad_request: no $missing"
        return
    }

    # Who is asking, for the daemon's rate limits: the end user's address and name.
    set ip ""
    catch { set ip [IP::client_addr] }
    set locale ""
    if { $static::otp_sb_locale_var ne "" } {
        set locale [ACCESS::session data get $static::otp_sb_locale_var]
    }
    set channel ""
    if { $static::otp_sb_channel_var ne "" } {
        set channel [ACCESS::session data get $static::otp_sb_channel_var]
    }
    set params [call mp_send_params $otp $phone $sender $ip $user $locale $channel \
        $static::otp_sb_token]
    set status [call otp_sideband_call sendOTP $params]
    # Only a real SID may open the success branch; anything unexpected becomes an ERR.
    if { ![regexp {^(SM|VE|CA)[0-9a-fA-F]{32}$} $status] && ![string match "ERR *" $status] } {
        set status "ERR internal: unexpected reply from otp-sidecar"
    }
    ACCESS::session data set "session.custom.twilio.status" $status
    if { ![string match "ERR *" $status] } {
        log local0.info "otp-sidecar: user '$user' phone $masked: sent $status"
    } else {
        log local0.warn "otp-sidecar: user '$user' phone $masked: $status"
    }
    unset otp
}
