# Load the Vagrantfile through Vagrant's own API and print every machine's resolved
# configuration as one JSON document (what tests/vagrantfile asserts on).
#
#   VAGRANT_CWD=<project> VAGRANT_HOME=<tmp> ruby vagrant/validate/dump_config.rb [provider ...]
#
# Providers default to virtualbox, hyperv and libvirt. They are resolved with
# validate_provider=false: none has to be installed, and a box present in VAGRANT_HOME is
# merged in (its own Vagrantfile included) exactly as `vagrant up` would. Each provider's
# config class also runs its own validate(), which `vagrant validate --ignore-provider`
# skips. The WinRM password is never printed, only its SHA-256. A Linux machine (the router,
# RDPLAB_ROUTER=1) is dumped the same way; its "ssh" section is its SSH communicator's.
#
# Exit status: 0 with JSON on stdout; 1 with the error on stderr when Vagrant cannot load
# the Vagrantfile. It never builds a Vagrant::Machine, so neither a provider nor the winrm
# gem is needed (the communicator is only loaded when a machine is built).

require "digest"
require "json"

# Activate the vagrant gem and its runtime dependencies the way /usr/bin/vagrant does.
vagrant_spec = Gem::Specification.find_all_by_name("vagrant").max_by(&:version)
abort "dump_config: the vagrant gem is not installed" if vagrant_spec.nil?
activate = lambda do |spec|
  spec.runtime_dependencies.each do |dep|
    begin
      gem(dep.name, *dep.requirement.as_list)
    rescue Gem::LoadError
      next
    end
    found = Gem::Specification.find_all_by_name(dep.name).detect(&:activated?)
    activate.call(found) if found
  end
end
activate.call(vagrant_spec)

require "vagrant"

PROVIDERS = (ARGV.empty? ? %w[virtualbox hyperv libvirt] : ARGV).map(&:to_sym)

# What a provider config's validate(machine) reads: the machine's config and its UI.
ValidationMachine = Struct.new(:name, :config, :ui, :env)

def plain(value)
  case value
  when Hash then value.each_with_object({}) { |(k, v), h| h[k.to_s] = plain(v) }
  when Array then value.map { |v| plain(v) }
  when Symbol then value.to_s
  when String, Integer, Float, TrueClass, FalseClass, NilClass then value
  when Vagrant::Plugin::V2::Config::UNSET_VALUE then nil
  else value.to_s
  end
end

def settings(config_obj)
  config_obj.instance_variables.each_with_object({}) do |iv, h|
    name = iv.to_s.delete_prefix("@")
    next if name.start_with?("_") || name == "logger"
    value = config_obj.instance_variable_get(iv)
    next if value.equal?(Vagrant::Plugin::V2::Config::UNSET_VALUE)
    h[name] = plain(value)
  end
end

def provider_config(config, provider, machine)
  pc = config.vm.get_provider_config(provider)
  real = !pc.is_a?(Vagrant::Config::V2::DummyConfig)
  errors = []
  if real && pc.respond_to?(:validate)
    begin
      result = pc.validate(machine) || {}
      errors = result.values.flatten.map(&:to_s)
    rescue StandardError => e
      errors = ["validate raised #{e.class}: #{e.message}"]
    end
  end
  {
    "config_class" => pc.class.name,
    "plugin_installed" => real,
    "settings" => settings(pc),
    "errors" => errors,
  }
end

def machine_dump(env, name, provider)
  mc = env.vagrantfile.machine_config(name, provider, env.boxes, nil, false)
  config = mc[:config]
  vm = config.vm
  winrm = config.winrm
  machine = ValidationMachine.new(name, config, env.ui, env)
  root = env.root_path
  {
    "box" => vm.box,
    "box_version" => vm.box_version,
    "box_found" => mc[:box] ? "#{mc[:box].name} #{mc[:box].version} (#{mc[:box].provider})" : nil,
    "hostname" => vm.hostname,
    "guest" => plain(vm.guest),
    "communicator" => plain(vm.communicator),
    "boot_timeout" => vm.boot_timeout,
    "winrm" => {
      "username" => winrm.username,
      "password_sha256" => winrm.password ? Digest::SHA256.hexdigest(winrm.password) : nil,
      "transport" => plain(winrm.transport),
      "port" => winrm.port,
      "guest_port" => winrm.guest_port,
      "basic_auth_only" => winrm.basic_auth_only,
      "ssl_peer_verification" => winrm.ssl_peer_verification,
      "timeout" => winrm.timeout,
      "errors" => winrm.validate(machine).values.flatten,
    },
    "ssh" => {
      "username" => config.ssh.username,
      "port" => config.ssh.port,
      "guest_port" => config.ssh.guest_port,
      "insert_key" => config.ssh.insert_key,
      "errors" => config.ssh.validate(machine).values.flatten,
    },
    "networks" => vm.networks.map { |type, opts| plain(opts).merge("type" => type.to_s) },
    "synced_folders" => plain(vm.synced_folders),
    "provisioners" => vm.provisioners.map do |p|
      pcfg = p.config
      entry = { "name" => p.name.to_s, "type" => p.type.to_s, "invalid" => p.invalid? }
      if p.type.to_s == "shell"
        entry["path"] = pcfg.path
        entry["args"] = plain(pcfg.args)
        entry["privileged"] = pcfg.privileged
        entry["path_exists"] = pcfg.path ? File.file?(File.expand_path(pcfg.path, root)) : nil
        entry["inline"] = pcfg.inline
      elsif p.type.to_s == "file"
        entry["source"] = pcfg.source
        entry["destination"] = pcfg.destination
        entry["path_exists"] = File.exist?(File.expand_path(pcfg.source, root))
      end
      entry
    end,
    "provider" => provider_config(config, provider, machine),
    "config_warnings" => mc[:config_warnings].map(&:to_s),
    "config_errors" => mc[:config_errors].map(&:to_s),
  }
end

begin
  env = Vagrant::Environment.new(
    cwd: ENV["VAGRANT_CWD"] || Dir.pwd,
    ui_class: Vagrant::UI::Silent,
  )
  names = env.machine_names
  doc = {
    "vagrant_version" => Vagrant::VERSION,
    "root_path" => env.root_path.to_s,
    "machine_names" => names.map(&:to_s),
    "primary" => env.primary_machine_name&.to_s,
    "machines" => names.each_with_object({}) do |name, h|
      h[name.to_s] = PROVIDERS.each_with_object({}) do |provider, per|
        per[provider.to_s] = machine_dump(env, name, provider)
      end
    end,
  }
  puts JSON.pretty_generate(doc)
rescue Vagrant::Errors::VagrantError => e
  warn "dump_config: #{e.class.name}: #{e.message}"
  exit 1
end
