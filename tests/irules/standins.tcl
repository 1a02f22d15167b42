# Stand-ins for the iRule commands, loaded into the interpreter that runs an iRule.
# Tcl 8.4 only, like the iRules themselves. Real I/O, the session store and the log live in
# the parent interpreter (run.tcl), reached through the __* aliases.

namespace eval static {}
namespace eval ACCESS {}
namespace eval ILX {}
namespace eval IP {}

# The end user's address, as TMM gives it (with a route domain suffix).
proc IP::client_addr {} {
    return [__client_addr]
}

proc when { event body } {
    __when $event $body
}

# iRules call procs of the same rule with `call name args`.
proc call { name args } {
    return [uplevel 1 [linsert $args 0 $name]]
}

proc log { facility message } {
    __log $facility $message
}

proc ACCESS::policy { what } {
    return [__agent_id]
}

# ACCESS::session data get NAME | ACCESS::session data set NAME VALUE
proc ACCESS::session { data op name args } {
    if { $op eq "get" } {
        return [__session_get $name]
    }
    __session_set $name [lindex $args 0]
    return ""
}

proc ILX::init { plugin extension } {
    return [__ilx_init $plugin $extension]
}

# ILX::call HANDLE ?-timeout MS? METHOD ?ARG ...?
proc ILX::call { handle args } {
    return [__ilx_call $handle $args]
}

# Reads -option value pairs off the front of argv into the named array.
proc __options { argvName optsName } {
    upvar 1 $argvName argv $optsName opts
    while { [llength $argv] > 0 && [string match "-*" [lindex $argv 0]] } {
        set opts([lindex $argv 0]) [lindex $argv 1]
        set argv [lrange $argv 2 end]
    }
}

# connect ?-timeout MS? ?-idle S? ?-status VAR? DEST
proc connect { args } {
    __options args opts
    set result [__connect [lindex $args 0]]
    set status [lindex $result 0]
    set conn [lindex $result 1]
    if { [info exists opts(-status)] } {
        upvar 1 $opts(-status) st
        set st $status
    }
    if { $conn eq "" && [__connect_failure_raises] } {
        error "connect failed: $status"
    }
    return $conn
}

# send ?-timeout MS? ?-status VAR? CONN DATA
proc send { args } {
    __options args opts
    set result [__send [lindex $args 0] [lindex $args 1]]
    if { [info exists opts(-status)] } {
        upvar 1 $opts(-status) st
        set st [lindex $result 0]
    }
    return [lindex $result 1]
}

# recv ?-timeout MS? ?-status VAR? COUNT CONN
proc recv { args } {
    __options args opts
    set timeout 30000
    if { [info exists opts(-timeout)] } {
        set timeout $opts(-timeout)
    }
    set result [__recv [lindex $args 1] [lindex $args 0] $timeout]
    if { [info exists opts(-status)] } {
        upvar 1 $opts(-status) st
        set st [lindex $result 0]
    }
    return [lindex $result 1]
}

proc close { conn } {
    __close $conn
}
