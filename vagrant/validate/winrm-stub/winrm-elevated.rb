# Stand-in for the winrm-elevated gem (see winrm.rb beside this file).
require "winrm"
