# A stand-in for the winrm gem, for validating the Vagrantfile where the gem is missing.
#
# Debian's vagrant package ships Vagrant's WinRM communicator but not the winrm, winrm-fs and
# winrm-elevated gems it requires, so every command that builds a machine with
# `communicator = "winrm"` dies with LoadError before it reads a setting. Validation never
# talks to a machine: it only needs the constants the communicator names when it loads.
# This file defines exactly those, and anything that would open a connection raises.
# See docs/vagrant.md, "How CI validates the Vagrantfile".

# The real gem brings httpclient; the communicator only names this one exception class.
unless defined?(HTTPClient)
  class HTTPClient
    class KeepAliveDisconnected < StandardError; end
  end
end

module WinRM
  RDPLAB_STUB = true

  class WinRMError < StandardError; end
  class WinRMHTTPTransportError < WinRMError; end
  class WinRMAuthorizationError < WinRMError; end
  class WinRMWSManFault < WinRMError; end

  class Connection
    def initialize(*)
      raise WinRMError, "rdplab winrm stub: validation only, cannot connect to a machine"
    end
  end
end
