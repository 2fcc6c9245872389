# Stand-in for the winrm-fs gem (see winrm.rb beside this file): validation never copies files.
require "winrm"

module WinRM
  module FS
    class FileManager
      def initialize(*)
        raise WinRM::WinRMError, "rdplab winrm stub: validation only, cannot copy files"
      end
    end
  end
end
