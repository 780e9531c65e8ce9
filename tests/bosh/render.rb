# Renders one BOSH job template the way the director does, for tests.
#
#   ruby render.rb JOB_SPEC TEMPLATE CONTEXT_JSON > rendered
#
# CONTEXT_JSON: {"properties": {...manifest properties, nested...},
#                "spec": {"deployment": ..., "name": ..., "index": ..., "id": ..., "az": ..., "address": ..., ...}}
#
# Mimics BOSH's ERB evaluation context: only properties declared in the job spec are
# visible (defaults filled in from the spec), `p` raises on an undeclared or unset
# property unless given a default, `if_p` yields only when every property is set, and
# `spec` answers with methods. ERB trim mode "-", as the director uses.
require "erb"
require "json"
require "ostruct"
require "yaml"

class UnknownProperty < StandardError
end

class RenderContext
  attr_reader :spec

  def initialize(job_spec, context)
    declared = job_spec.fetch("properties") || {}
    manifest = context.fetch("properties", {})
    @properties = {}
    declared.each do |name, decl|
      value = dig(manifest, name)
      value = decl["default"] if value.nil? && decl.is_a?(Hash) && decl.key?("default")
      @properties[name] = value unless value.nil?
    end
    @declared = declared.keys
    @spec = to_struct(context.fetch("spec", {}).merge("properties" => @properties))
  end

  def p(*args)
    names = Array(args[0])
    names.each do |name|
      check_declared(name)
      return @properties[name] if @properties.key?(name)
    end
    return args[1] if args.length == 2
    raise UnknownProperty, "Can't find property '#{names.join("', '")}'"
  end

  def if_p(*names)
    values = names.map do |name|
      check_declared(name)
      return ActiveElseBlock.new(self) unless @properties.key?(name)
      @properties[name]
    end
    yield(*values)
    InactiveElseBlock.new
  end

  def get_binding
    binding
  end

  private

  # BOSH only hands declared properties to templates, so reading an undeclared one can
  # never work on a real director, even with a default. Fail loudly instead.
  def check_declared(name)
    raise UnknownProperty, "property '#{name}' is not declared in the job spec" unless @declared.include?(name)
  end

  def dig(hash, dotted)
    dotted.split(".").reduce(hash) { |h, k| h.is_a?(Hash) ? h[k] : nil }
  end

  def to_struct(value)
    case value
    when Hash then OpenStruct.new(value.transform_values { |v| to_struct(v) })
    when Array then value.map { |v| to_struct(v) }
    else value
    end
  end
end

class ActiveElseBlock
  def initialize(ctx)
    @ctx = ctx
  end

  def else
    yield
  end
end

class InactiveElseBlock
  def else; end
end

job_spec_path, template_path, context_path = ARGV
job_spec = YAML.safe_load(File.read(job_spec_path))
context = JSON.parse(File.read(context_path))
ctx = RenderContext.new(job_spec, context)
begin
  print ERB.new(File.read(template_path), trim_mode: "-").result(ctx.get_binding)
rescue StandardError => e
  warn "#{File.basename(template_path)}: #{e.class}: #{e.message}"
  exit 1
end
